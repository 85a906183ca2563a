"""Reference implementations of the zoo networks in PyTorch and Keras, for comparison with minicnn."""

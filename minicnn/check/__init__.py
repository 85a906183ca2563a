"""Grade a learner's layer against minicnn, PyTorch and Keras: ``python -m minicnn.check``."""

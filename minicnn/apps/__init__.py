"""What a user runs: ``python -m minicnn`` (cli: train, evaluate, predict, transfer), the
transfer-learning experiment, the benchmark against PyTorch and Keras, and the plots they draw.
The top floor: it may import any part of minicnn, and nothing imports it."""

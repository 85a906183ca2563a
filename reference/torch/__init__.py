"""The zoo networks written the PyTorch way (NCHW)."""

"""The zoo networks written the Keras way (NHWC)."""

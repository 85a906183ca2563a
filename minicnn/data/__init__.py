"""Data for minicnn: MNIST / Fashion-MNIST files, scaling, and a batch iterator.

    from minicnn.data import load, to_float, normalize, DataLoader, MNIST_MEAN, MNIST_STD
    images, labels = load("mnist")                           # (60000, 28, 28) uint8, (60000,) int64
    x = normalize(to_float(images), MNIST_MEAN, MNIST_STD)   # (60000, 1, 28, 28) float32
    for xb, yb in DataLoader(x, labels, batch_size=64, seed=0): ...
"""
from .datasets import CLASSES, DATASETS, cache_dir, fetch, load, locate
from .idx import DataError, read_idx, write_idx
from .loader import DataLoader
from .transforms import (MNIST_MEAN, MNIST_STD, dataset_mean_std, mean_std, normalize, one_hot,
                         to_float)

__all__ = ["CLASSES", "DATASETS", "DataError", "DataLoader", "MNIST_MEAN", "MNIST_STD", "cache_dir",
           "dataset_mean_std", "fetch", "load", "locate", "mean_std", "normalize", "one_hot",
           "read_idx", "to_float", "write_idx"]

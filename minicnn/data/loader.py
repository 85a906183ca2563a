"""Mini-batches over in-memory arrays, shuffled reproducibly.

    loader = DataLoader(x, y, batch_size=64, shuffle=True, seed=0)
    for epoch in range(start_epoch, epochs):
        loader.set_epoch(epoch)          # resuming at epoch 3 gives exactly epoch 3's batches
        for xb, yb in loader: ...

The order of epoch ``e`` depends only on (seed, e): it is drawn from
``np.random.default_rng([seed, e])``. Each pass over the loader uses the current epoch and then
advances it by one, so a plain ``for epoch ...: for xb, yb in loader`` also reshuffles every
epoch; ``set_epoch`` (as in PyTorch's DistributedSampler) pins the epoch explicitly.

Augmentation: ``DataLoader(x, y, transform=Augment(...))`` calls ``transform(xb, rng)`` on every
batch's x, where ``rng = np.random.default_rng([seed, epoch, 1])`` is one generator per epoch
(the order uses ``[seed, epoch]``), so epoch ``e``'s augmented batches also depend only on
(seed, e), resumed or not.
"""
import numpy as np

from ..core.random import get_rng


class DataLoader:
    """Iterate over (xb, yb) batches of ``x`` (N, ...) and ``y`` (N, ...).

    batch_size: samples per batch; the last batch is smaller unless ``drop_last``.
    shuffle: a new permutation every epoch; False keeps the stored order.
    seed: int for reproducible orders; None draws one from minicnn's global generator
        (so ``minicnn.manual_seed`` also fixes the loader).
    transform: None, or ``transform(xb, rng) -> new xb`` applied to each batch's x (e.g. an
        ``Augment``); it must not change xb in place (unshuffled batches are views of x).
    ``len(loader)`` is the number of batches per epoch: ceil(N / batch_size), or
    floor(N / batch_size) with drop_last, as in PyTorch.
    """

    def __init__(self, x, y, batch_size=64, shuffle=True, drop_last=False, seed=None, transform=None):
        x, y = np.asarray(x), np.asarray(y)
        if x.ndim == 0 or y.ndim == 0 or len(x) != len(y):
            raise ValueError(f"DataLoader: x and y need the same first dimension, got x {x.shape}, "
                             f"y {y.shape}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"DataLoader: batch_size must be a positive integer, got {batch_size!r}")
        self.x, self.y = x, y
        self.batch_size, self.shuffle, self.drop_last = int(batch_size), bool(shuffle), bool(drop_last)
        self.seed = int(get_rng().integers(2**63)) if seed is None else int(seed)
        if transform is not None and not callable(transform):
            raise ValueError(f"DataLoader: transform must be callable as transform(xb, rng), got {transform!r}")
        self.transform = transform
        self.epoch = 0

    def set_epoch(self, epoch):
        """Make the next pass use epoch ``epoch``'s order (e.g. when resuming a run)."""
        if epoch < 0:
            raise ValueError(f"DataLoader: epoch must be >= 0, got {epoch}")
        self.epoch = int(epoch)

    def order(self, epoch):
        """The sample indices of epoch ``epoch``, shape (N,), before batching."""
        n = len(self.x)
        if not self.shuffle:
            return np.arange(n)
        return np.random.default_rng([self.seed, int(epoch)]).permutation(n)

    def __len__(self):
        n, b = len(self.x), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def __iter__(self):
        # The epoch is read and advanced here, not lazily inside the generator, so
        # iter(loader) fixes the order at once.
        order = self.order(self.epoch)
        rng = np.random.default_rng([self.seed, self.epoch, 1]) if self.transform is not None else None
        self.epoch += 1
        return self._batches(order, rng)

    def _batches(self, order, rng=None):
        b = self.batch_size
        for i in range(len(self)):
            idx = order[i * b:(i + 1) * b]
            if self.shuffle:
                xb, yb = self.x[idx], self.y[idx]
            else:  # contiguous: slices are views, no copy
                xb, yb = self.x[i * b:(i + 1) * b], self.y[i * b:(i + 1) * b]
            yield (xb if rng is None else self.transform(xb, rng)), yb

    def __repr__(self):
        return (f"DataLoader(n={len(self.x)}, batch_size={self.batch_size}, shuffle={self.shuffle}, "
                f"drop_last={self.drop_last}, seed={self.seed}, epoch={self.epoch}"
                + (f", transform={self.transform!r})" if self.transform is not None else ")"))

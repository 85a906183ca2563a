"""A convolution's output pooled by the 2×2, stride-2 pool after it (``layers.fusion``), for the
kernels that pool the batch's output afterwards: ``conv_loops``, ``conv_fast`` and, outside
"direct" and "gemm", ``conv_numba`` (which pool each image's output in their own loops).

``pool`` names the pool: True or "max" (MaxPool2D(2)), "mean" (AvgPool2D(2): no padding, so
every window divides by 4) or "sum" (SumPool2D(2)). ``pool_module`` is the pool kernel module
of the same family (``pool_loops``, ``pool_fast`` or ``pool_numba``): the same bits as the pool
layer running on its own.
"""

_WINDOW = ((2, 2), (2, 2), ((0, 0), (0, 0)))


def after(pool_module, out, cache, pool, relu, need_cache):
    """(pooled (N, O, ⌊H_out/2⌋, ⌊W_out/2⌋), (cache, the pool's)) for out (N, O, H_out, W_out),
    the convolution's output (clipped with ``relu``) and its cache; the pool's is
    ``max_backward``'s for "max", else ``spread``'s: (``avg_backward``'s cache, the clipped
    output or None). With ``need_cache=False`` the second is None."""
    if pool in (True, "max"):
        pooled, pool_cache = pool_module.max_forward(out, *_WINDOW, need_cache)
    elif pool == "mean":
        pooled, pool_cache = pool_module.avg_forward(out, *_WINDOW, True)
        pool_cache = (pool_cache, out if relu else None)
    elif pool == "sum":
        pooled, pool_cache = pool_module.sum_forward(out, *_WINDOW)
        pool_cache = (pool_cache, out if relu else None)
    else:
        raise ValueError(f"pool must be False, True, 'max', 'mean' or 'sum', got {pool!r}")
    return pooled, ((cache, pool_cache) if need_cache else None)


def spread(pool_module, dout, spread):
    """dout (N, O, ⌊H_out/2⌋, ⌊W_out/2⌋), the gradient of a "mean" or "sum" pool's output,
    spread back over the convolution's output (N, O, H_out, W_out), with the gradient of the
    ReLU between them when ``spread`` (from ``after``) holds the clipped output."""
    pool_cache, clipped = spread
    return pool_module.avg_backward(dout, pool_cache, clipped)

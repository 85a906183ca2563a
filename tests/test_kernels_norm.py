"""The batch normalisation kernels: ``norm_numba`` against ``norm_loops`` (NumPy) and PyTorch's
batch_norm, in float32 and float64, with batch statistics (training) and given ones (eval),
forward and backward, on random shapes (N·H·W = 2, C = 1, non-contiguous inputs among them).

Three implementations sum in different orders and precisions (NumPy: float32 sums; Numba: float64
sums, one per plane; PyTorch: its own), so none equals another bit for bit. Each is compared
within a bound DERIVED for any implementation of the formulas; see ``error_bounds``.
"""
import numpy as np
import pytest

from minicnn import kernels
from minicnn.kernels import norm_loops

norm_numba = pytest.importorskip("minicnn.kernels.norm_numba")
torch = pytest.importorskip("torch")

UNIT_ROUNDOFF = {np.dtype(np.float32): 2.0 ** -24, np.dtype(np.float64): 2.0 ** -53}
AXES = (0, 2, 3)


def gamma(k, u):
    """Higham's γ_k = k·u/(1 − k·u): |computed − exact| <= γ_k · Σ|terms| for a sum (or a
    product) of k + 1 terms evaluated in precision u, in any order (Accuracy and Stability of
    Numerical Algorithms, §3.1). A part of the sum done in higher precision only helps."""
    return k * u / (1 - k * u)


def column(v):
    return v[:, None, None]


def error_bounds(x, dout, weight, bias, eps, stats, u):
    """First-order bounds on |computed − exact| for any implementation of batch normalisation
    whose arithmetic is in precision u or better (float32 data: u = 2⁻²⁴), sums in any order,
    x̂ formed as (x − mean)·s or x·s − mean·s, y as γ·x̂ + β or x·(γs) + (β − mean·γs).

    x, dout (N, C, H, W); weight, bias (C,) or None; stats None (batch statistics) or the given
    (mean, var). Returns bounds for mean, var (C,), x̂, y, dx (N, C, H, W), dweight, dbias (C,).
    Magnitudes are computed in float64 from the inputs. With n = N·H·W, per channel:

    * mean = Σx/n: γ_{n+1}·Σ|x − k|/n for a sum shifted by a value k of the channel (norm_numba,
      in float64) or not (k = 0), so <= γ_{n+2}·2·max|x| =: δμ.
    * var = Σ(x − mean)²/n: each square has relative error 3u, the sum γ_n, and an error δμ in
      the mean adds δμ² (Σ(x − mean) = 0): 3·γ_{n+4}·(var + δμ²) + δμ². norm_numba's float32
      path takes the shifted sums Σ(x − k), Σ(x − k)² in float64 (unit 2⁻⁵³), whose cancellation
      in Σ(x − k)²/n − (Σ(x − k)/n)² costs 3·γ_{n+3}(2⁻⁵³)·(var + (mean − k)²) with
      |mean − k| <= 2·max|x|: + 12·γ_{n+3}(2⁻⁵³)·max|x|² =: δv.
    * s = 1/sqrt(var + eps): relative error e_s = δv/(2(var + eps)) + 3u (the sum, the root and
      the division each round once).
    * x̂: s·(δμ + (|x| + |mean|)·(e_s + 3u)) =: δx̂ (the subtraction, the product and s).
    * y = γ·x̂ + β: |γ|·δx̂ + 4u·(|γ|·s·(|x| + |mean|) + |β|) (the roundings of γ·s, of the
      product and of the sum, on magnitudes that include torch's form x·α + (β − mean·α)).
    * dbias = Σdout: γ_n·Σ|dout|;  dweight = Σdout·x̂: γ_{n+1}·Σ|dout·x̂| + Σ|dout|·δx̂.
    * dx, batch statistics: γ·s·(dout − m₁ − x̂·m₂) with m₁ = mean(dout), m₂ = mean(dout·x̂):
      δm₁ = γ_{n+1}·mean|dout|, δm₂ = γ_{n+2}·mean|dout·x̂| + mean(|dout|·δx̂); the bracket
      δm₁ + |x̂|·δm₂ + |m₂|·δx̂ + 3u·T with T = |dout| + |m₁| + |x̂·m₂|, the factor γ·s adds
      |γ|·s·T·(e_s + 3u). (PyTorch's (x − mean)·Σ(x − mean)·dout·s²/n is the same term: its
      s² counts twice, which the δx̂ inside δm₂ and the |m₂|·δx̂ account for.)
      Given statistics: dx = γ·s·dout, |γ|·s·|dout|·(e_s + 3u).
    """
    x, dout = x.astype(np.float64), dout.astype(np.float64)
    N, C, H, W = x.shape
    n = N * H * W
    g = np.ones(C) if weight is None else np.abs(weight.astype(np.float64))
    b = np.zeros(C) if bias is None else np.abs(bias.astype(np.float64))
    if stats is None:
        mean, var = x.mean(axis=AXES), x.var(axis=AXES)
        largest = np.abs(x).max(axis=AXES)
        d_mean = gamma(n + 2, u) * 2 * largest
        d_var = 3 * gamma(n + 4, u) * (var + d_mean ** 2) + d_mean ** 2
        if u > UNIT_ROUNDOFF[np.dtype(np.float64)]:
            d_var = d_var + 12 * gamma(n + 3, 2.0 ** -53) * largest ** 2
    else:
        mean, var = (np.asarray(v, np.float64) for v in stats)
        d_mean, d_var = np.zeros(C), np.zeros(C)
    s = 1 / np.sqrt(var + eps)
    e_s = d_var / (2 * (var + eps)) + 3 * u
    x_hat = (x - column(mean)) * column(s)
    size = np.abs(x) + column(np.abs(mean))
    d_x_hat = column(s) * (column(d_mean) + size * column(e_s + 3 * u))
    d_y = column(g) * d_x_hat + 4 * u * (column(g * s) * size + column(b))
    d_dbias = gamma(n, u) * np.abs(dout).sum(axis=AXES)
    d_dweight = (gamma(n + 1, u) * np.abs(dout * x_hat).sum(axis=AXES)
                 + (np.abs(dout) * d_x_hat).sum(axis=AXES))
    gs = column(g * s)
    if stats is None:
        m1, m2 = dout.mean(axis=AXES), (dout * x_hat).mean(axis=AXES)
        d_m1 = gamma(n + 1, u) * np.abs(dout).mean(axis=AXES)
        d_m2 = (gamma(n + 2, u) * np.abs(dout * x_hat).mean(axis=AXES)
                + (np.abs(dout) * d_x_hat).mean(axis=AXES))
        terms = np.abs(dout) + column(np.abs(m1)) + np.abs(x_hat) * column(np.abs(m2))
        bracket = (column(d_m1) + np.abs(x_hat) * column(d_m2) + column(np.abs(m2)) * d_x_hat
                   + 3 * u * terms)
        d_dx = gs * bracket + gs * terms * column(e_s + 3 * u)
    else:
        d_dx = gs * np.abs(dout) * column(e_s + 3 * u)
    return d_mean, d_var, d_x_hat, d_y, d_dx, d_dweight, d_dbias


def assert_within(name, ours, theirs, bound, config):
    """|ours − theirs| <= 2·(2·bound): each side is within the bound of the exact value, and
    the bound is first order (the terms it drops are (n·u)² and e_s² small: a factor 2 covers
    them many times over)."""
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    assert ours.shape == theirs.shape, (name, ours.shape, theirs.shape)
    excess = np.abs(ours - theirs) - 4 * bound
    worst = np.unravel_index(np.argmax(excess), excess.shape)
    assert excess[worst] <= 0, (f"{config}: {name} differs by {abs(ours - theirs)[worst]:.3e} "
                                f"at {worst}, bound 4·{bound[worst]:.3e}")


def run_kernels(module, x, dout, weight, bias, eps, stats):
    """{name: array} of one forward and one backward pass of a kernel module."""
    if stats is None:
        y, mean, var, cache = module.forward_train(x, weight, bias, eps)
        out = {"mean": mean, "var": var}
    else:
        y, cache = module.forward_eval(x, *stats, weight, bias, eps)
        out = {}
    x_hat, _, batch = module.saved_for_backward(cache)
    assert batch == (stats is None)
    dx, dweight, dbias = module.backward(dout, cache, weight)
    out |= {"y": y, "x_hat": x_hat, "dx": dx}
    if weight is not None:
        out |= {"dweight": dweight, "dbias": dbias}
    for value in out.values():
        assert value.dtype == x.dtype
    return out


def run_torch(x, dout, weight, bias, eps, stats):
    """The same names from torch.nn.functional.batch_norm (contiguous copies of the inputs)."""
    xt = torch.tensor(np.ascontiguousarray(x), requires_grad=True)
    wt = None if weight is None else torch.tensor(weight, requires_grad=True)
    bt = None if bias is None else torch.tensor(bias, requires_grad=True)
    if stats is None:
        yt = torch.nn.functional.batch_norm(xt, None, None, wt, bt, training=True, eps=eps)
    else:
        running = [torch.tensor(v) for v in stats]
        yt = torch.nn.functional.batch_norm(xt, *running, wt, bt, training=False, eps=eps)
    (yt * torch.tensor(dout)).sum().backward()
    out = {"y": yt.detach().numpy(), "dx": xt.grad.numpy()}
    if weight is not None:
        out |= {"dweight": wt.grad.numpy(), "dbias": bt.grad.numpy()}
    return out


# (N, C, H, W): N·H·W = 2 with C = 1, single images and channels, odd planes, and one large
# enough (32·3·24·24 > 2¹⁵ elements) that norm_numba runs its parallel versions
SHAPES = [(2, 1, 1, 1), (1, 1, 1, 2), (1, 3, 2, 1), (4, 1, 5, 3), (3, 5, 7, 2), (6, 4, 9, 11),
          (32, 3, 24, 24)]


def case(shape, dtype, seed, non_contiguous):
    """x (N, C, H, W) with per-channel scales and offsets (offsets up to 20 scales: the mean
    does not vanish), dout, γ, β, running statistics."""
    rng = np.random.default_rng(seed)
    N, C, H, W = shape
    scale = rng.uniform(0.1, 10, C)
    offset = scale * rng.uniform(-20, 20, C)
    x = rng.standard_normal((N, H, W, C)) * scale + offset
    # NHWC data seen as NCHW: a view whose strides are not C-contiguous
    x = x.transpose(0, 3, 1, 2) if non_contiguous else np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    dout = rng.standard_normal(shape)
    weight, bias = rng.uniform(-2, 2, C), rng.standard_normal(C)
    stats = (offset + rng.standard_normal(C) * scale, scale ** 2 * rng.uniform(0.5, 2, C))
    cast = lambda a: a.astype(dtype)  # noqa: E731
    return cast(x), cast(dout), cast(weight), cast(bias), tuple(cast(v) for v in stats)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("training", [True, False], ids=["batch", "given"])
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "plain"])
@pytest.mark.parametrize("index, shape", list(enumerate(SHAPES)))
def test_numba_norm_matches_numpy_and_torch(index, shape, affine, training, dtype):
    dtype = np.dtype(dtype)
    x, dout, weight, bias, stats = case(shape, dtype, seed=index, non_contiguous=index % 2 == 1)
    eps = 1e-5 if index % 3 else 1e-3
    if not affine:
        weight = bias = None
    stats_used = None if training else stats
    config = f"{shape} {dtype} affine={affine} training={training}"
    bounds = dict(zip(("mean", "var", "x_hat", "y", "dx", "dweight", "dbias"),
                      error_bounds(x, dout, weight, bias, eps, stats_used,
                                   UNIT_ROUNDOFF[dtype])))
    ours = run_kernels(norm_numba, x, dout, weight, bias, eps, stats_used)
    numpy = run_kernels(norm_loops, x, dout, weight, bias, eps, stats_used)
    reference = run_torch(x, dout, weight, bias, eps, stats_used)
    assert set(ours) == set(numpy) and set(reference) <= set(ours)
    for name in ours:
        assert_within(f"{name} vs NumPy", ours[name], numpy[name], bounds[name], config)
        if name in reference:
            assert_within(f"{name} vs torch", ours[name], reference[name], bounds[name], config)


def test_the_layer_runs_the_kernels_of_its_forward_pass():
    """A forward on NumPy's kernels, then the switch to Numba's: backward still reads NumPy's
    cache with NumPy's module (their caches differ)."""
    import minicnn as mc
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 3, 5, 5)).astype(np.float32)
    bn = mc.BatchNorm2D(3)
    with kernels.using("loops"):
        y = bn(x)
    with kernels.using("numba"):
        dx = bn.backward(np.ones_like(y))
    with kernels.using("loops"):
        again = mc.BatchNorm2D(3)
        again(x)
        np.testing.assert_array_equal(dx, again.backward(np.ones_like(y)))


"""The Numba kernels (the default backend) against the teaching loops, NumPy and PyTorch.

Convolution: the three algorithms ("direct", "gemm" and "winograd"), every output (out, dx, dw,
db), float32 and float64, random shapes with stride, padding and dilation. Pooling: bit for bit
the loops, ties included. ReLU and Adam: bit for bit the NumPy code they replace. Batch
normalisation: tests/test_kernels_norm.py. The parallel versions (batch normalisation's too) run
in a subprocess with two threads and must give the serial versions' bits.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from test_conv import (NAMES, assert_same_outputs, conv_arguments, conv_bounds, conv_configs,
                       conv_outputs, window_fits)
from test_pool import WINDOWED, kernel_configs, normal, pool_configs, run_kernels, seeds, with_ties
from twins import compare, requires_torch

import minicnn as mc
from minicnn import kernels, losses, optim
from minicnn.train import loop as training
from minicnn.kernels import conv_loops, elementwise_loops, jit, norm_loops, pool_loops

numba = pytest.importorskip("numba")
conv_numba = pytest.importorskip("minicnn.kernels.conv_numba")
pool_numba = pytest.importorskip("minicnn.kernels.pool_numba")
elementwise_numba = pytest.importorskip("minicnn.kernels.elementwise_numba")
norm_numba = pytest.importorskip("minicnn.kernels.norm_numba")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny tensors: torch's thread pool costs more than it saves on a busy 2-core box."""
    torch = pytest.importorskip("torch")
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def algorithm():
    """``algorithm(name)`` forces conv_numba's algorithm ("direct", "gemm", None: by shape)."""
    yield conv_numba.force
    conv_numba.force(None)


# ----------------------------------------------------------------------------------------
# convolution
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["direct", "gemm", None])
@given(config=conv_configs(), dtype=st.sampled_from([np.float64, np.float32]),
       seed=st.integers(0, 2**16))
@example(config=({"in_channels": 4, "out_channels": 3, "kernel_size": 4, "stride": 1,
                  "padding": "same", "dilation": 1, "bias": True}, (2, 4, 7, 6)),
         dtype=np.float64, seed=0)     # C·kh·kw + 1 = 65 rows: dw as one long product
@example(config=({"in_channels": 3, "out_channels": 2, "kernel_size": 7, "stride": 2,
                  "padding": 3, "dilation": 1, "bias": False}, (2, 3, 13, 12)),
         dtype=np.float32, seed=1)     # a ResNet's first layer: im2col reads column phases
@example(config=({"in_channels": 2, "out_channels": 3, "kernel_size": (3, 4), "stride": (1, 3),
                  "padding": 2, "dilation": (1, 2), "bias": True}, (2, 2, 9, 14)),
         dtype=np.float64, seed=2)     # 3 phases; the taps 2 columns apart land in all three
def test_numba_conv_equals_loops(name, config, dtype, seed):
    cfg, shape = config
    assume(window_fits(cfg, shape))
    cfg["out_channels"] = min(cfg["out_channels"], 3)  # the loops are slow: keep them small
    args = conv_arguments(cfg, shape, dtype, seed)
    with conv_numba.forcing(name):
        ours = conv_outputs(conv_numba, *args, dout_seed=seed + 2)
    reference = conv_outputs(conv_loops, *args, dout_seed=seed + 2)
    assert_same_outputs(ours, reference, dtype, f"{name}: {cfg} on {shape} {np.dtype(dtype)}",
                        conv_bounds(args, seed + 2, dtype))


def test_each_algorithm_takes_the_shapes_it_computes(algorithm):
    algorithm("direct")
    assert conv_numba.algorithm((2, 3, 9, 9), (4, 3, 3, 3), (1, 1)) == "direct"
    assert conv_numba.algorithm((2, 3, 9, 9), (4, 3, 3, 3), (2, 1), (1, 2)) == "direct"
    algorithm("winograd")
    assert conv_numba.algorithm((2, 3, 9, 9), (4, 3, 3, 3), (1, 1)) == (
        "winograd" if conv_numba.blas.GEMM is not None else "gemm")
    for w_shape, stride, dilation in [((4, 3, 5, 5), (1, 1), (1, 1)),
                                      ((4, 3, 3, 3), (2, 2), (1, 1)),
                                      ((4, 3, 3, 3), (1, 1), (2, 1))]:
        assert conv_numba.algorithm((2, 3, 9, 9), w_shape, stride, dilation) == "gemm"
    algorithm(None)
    for x_shape, w_shape in [((64, 6, 14, 14), (16, 6, 5, 5)), ((64, 1, 28, 28), (32, 1, 3, 3)),
                             ((64, 8, 16, 16), (8, 8, 1, 1)), ((64, 64, 8, 8), (64, 64, 3, 3)),
                             ((64, 3, 64, 64), (16, 3, 7, 7))]:
        assert conv_numba.algorithm(x_shape, w_shape, (1, 1)) == "gemm"
    assert conv_numba.algorithm((64, 32, 26, 26), (64, 32, 3, 3), (1, 1)) == (
        "winograd" if conv_numba.blas.GEMM is not None else "gemm")     # mnist_cnn's second
    # at most 8 output channels and more than a 1×1 kernel: LeNet-5's first layer,
    # resnet_small's first (7×7, stride 2) and its 8-channel 3×3 layers
    for x_shape, w_shape, stride in [((64, 1, 28, 28), (6, 1, 5, 5), (1, 1)),
                                     ((64, 3, 64, 64), (8, 3, 7, 7), (2, 2)),
                                     ((64, 8, 16, 16), (8, 8, 3, 3), (1, 1))]:
        assert conv_numba.algorithm(x_shape, w_shape, stride) == "direct"
    with pytest.raises(ValueError, match="direct"):
        conv_numba.force("fft")


# Winograd's F(2×2, 3×3) sums other terms than the formula: each output is
#     Aᵀ [Σ_c (G g_c Gᵀ) ⊙ (Bᵀ d_c B)] A + b,
# every term of which goes through at most k = C + 11 roundings (4 in G g Gᵀ, 2 in Bᵀ d B, 1
# product, C − 1 additions over the input channels in any order, 4 in Aᵀ M A, 1 for the bias;
# G's halves are exact in binary). By the same argument as above, |winograd − exact| <= γ_k · Z,
# Z the same computation on the absolute values of x, w, b and of the transforms' entries
# (every term then positive), here in float64. The reference (the loops, same dtype) is within
# γ_n·Σ|terms| of exact, so the two differ by at most γ_k·Z + γ_n·Σ|terms|. The input gradient
# is the transpose, Σ over the tiles of B [Σ_o (G g_o Gᵀ) ⊙ (A dY_o Aᵀ)] Bᵀ, the 4×4 tiles two
# apart added where they overlap: k = O + 12 (4 in U, 2 in A dY Aᵀ, 1 product, O − 1 additions,
# 3 along the rows and 3 down the columns of B·dV·Bᵀ with the overlaps; see
# winograd_input_magnitude). The weight gradient Gᵀ [Σ (A dY Aᵀ) ⊙ (Bᵀ d B)] G sums over every tile of every image (see
# winograd_weight_magnitude). A wrong transform entry or tile offset moves an output by a whole
# term: far above the bound.
B_T = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=np.float64)
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], dtype=np.float64)
A_T = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=np.float64)


def winograd_magnitude(x, w, b, pads, crop):
    """Z per output (float64): F(2×2, 3×3) of |x| padded by ``pads`` with |w| (O, C, 3, 3) and
    |b| (or None), every transform entry replaced by its absolute value; the window ``crop``
    ((top, rows), (left, columns)) of the result."""
    (pad_top, pad_bottom), (pad_left, pad_right) = pads
    x = np.abs(np.asarray(x, np.float64))
    H_full = x.shape[2] + pad_top + pad_bottom - 2
    W_full = x.shape[3] + pad_left + pad_right - 2
    TH, TW = -(-H_full // 2), -(-W_full // 2)
    x_pad = np.zeros(x.shape[:2] + (2 * TH + 2, 2 * TW + 2))
    x_pad[:, :, pad_top:pad_top + x.shape[2], pad_left:pad_left + x.shape[3]] = x
    d = np.lib.stride_tricks.sliding_window_view(x_pad, (4, 4), axis=(2, 3))[:, :, ::2, ::2]
    V = np.einsum("xr,nctsrq,yq->nctsxy", np.abs(B_T), d, np.abs(B_T))
    U = np.einsum("xp,ocpq,yq->ocxy", np.abs(G), np.abs(np.asarray(w, np.float64)), np.abs(G))
    Y = np.einsum("ax,notsxy,by->notsab", np.abs(A_T), np.einsum("ocxy,nctsxy->notsxy", U, V),
                  np.abs(A_T))
    N, O = Y.shape[:2]
    Z = Y.transpose(0, 1, 2, 4, 3, 5).reshape(N, O, 2 * TH, 2 * TW)
    if b is not None:
        Z = Z + np.abs(np.asarray(b, np.float64))[:, None, None]
    (top, rows), (left, columns) = crop
    return Z[:, :, top:top + rows, left:left + columns]


def winograd_bounds(module_args, dout_seed, dtype):
    """[allowed |winograd − loops| per entry] for out, dx, dw; db as conv_bounds."""
    x, w, b, stride, pads, dilation = module_args
    bounds = conv_bounds(module_args, dout_seed, dtype)
    reference = [None if bound is None else bound / 2 for bound in bounds]   # γ_n·Σ|terms|
    (N, C, H, W), O = x.shape, w.shape[0]
    H_out = H + sum(pads[0]) - 2
    W_out = W + sum(pads[1]) - 2
    dout = normal((N, O, H_out, W_out), dout_seed, x.dtype)
    u = np.finfo(dtype).eps / 2
    gamma = lambda k: k * u / (1 - k * u)     # noqa: E731
    Z_out = winograd_magnitude(x, w, b, pads, ((0, H_out), (0, W_out)))
    Z_dx = winograd_input_magnitude(dout, w, pads, (H, W))
    return [reference[0] + gamma(C + 11) * Z_out, reference[1] + gamma(O + 12) * Z_dx,
            reference[2] + gamma(N * -(-H_out // 2) * -(-W_out // 2) + 8)
            * winograd_weight_magnitude(x, dout, pads), bounds[3]]


def output_tiles(dout):
    """dout (N, O, H_out, W_out) -> its 2×2 tiles (N, O, TH, TW, 2, 2) in float64, the outputs
    past the edge (which the forward pass drops) as zeros: they have no gradient."""
    N, O, H_out, W_out = dout.shape
    TH, TW = -(-H_out // 2), -(-W_out // 2)
    dy = np.zeros((N, O, 2 * TH, 2 * TW))
    dy[:, :, :H_out, :W_out] = dout
    return dy.reshape(N, O, TH, 2, TW, 2).transpose(0, 1, 2, 4, 3, 5)


def winograd_input_magnitude(dout, w, pads, size):
    """Z of the input gradient (float64): Σ over the tiles of |B| [Σ_o (|G| |g_o| |G|ᵀ) ⊙
    (|A| |dY_o| |A|ᵀ)] |B|ᵀ, each 4×4 result added at its tile of the padded input, whose
    inside (from row pads[0][0], column pads[1][0], ``size`` (H, W)) is the gradient's."""
    dM = np.einsum("ax,notsab,by->notsxy", np.abs(A_T), output_tiles(np.abs(dout)), np.abs(A_T))
    U = np.einsum("xp,ocpq,yq->ocxy", np.abs(G), np.abs(np.asarray(w, np.float64)), np.abs(G))
    dd = np.einsum("xr,nctsxy,yq->nctsrq", np.abs(B_T), np.einsum("ocxy,notsxy->nctsxy", U, dM),
                   np.abs(B_T))                                   # (N, C, TH, TW, 4, 4)
    N, C, TH, TW = dd.shape[:4]
    padded = np.zeros((N, C, 2 * TH + 2, 2 * TW + 2))
    for i in range(TH):
        for j in range(TW):
            padded[:, :, 2 * i:2 * i + 4, 2 * j:2 * j + 4] += dd[:, :, i, j]
    (top, _), (left, _) = pads
    return padded[:, :, top:top + size[0], left:left + size[1]]


def winograd_weight_magnitude(x, dout, pads):
    """Z of the weight gradient (float64): |G|ᵀ [Σ over images and tiles of
    (|A| |dY| |A|ᵀ) ⊙ (|B|ᵀ |d| |B|)] |G|, (O, C, 3, 3). Each of its terms went through at most
    N·tiles + 8 roundings: 2 in Bᵀ d B, 2 in A dY Aᵀ, 1 product, N·tiles − 1 additions in any
    order, 4 in Gᵀ dU G."""
    (pad_top, pad_bottom), (pad_left, pad_right) = pads
    x, dout = np.abs(np.asarray(x, np.float64)), np.abs(np.asarray(dout, np.float64))
    N, O, H_out, W_out = dout.shape
    TH, TW = -(-H_out // 2), -(-W_out // 2)
    x_pad = np.zeros(x.shape[:2] + (2 * TH + 2, 2 * TW + 2))
    x_pad[:, :, pad_top:pad_top + x.shape[2], pad_left:pad_left + x.shape[3]] = x
    d = np.lib.stride_tricks.sliding_window_view(x_pad, (4, 4), axis=(2, 3))[:, :, ::2, ::2]
    V = np.einsum("xr,nctsrq,yq->nctsxy", np.abs(B_T), d, np.abs(B_T))
    dM = np.einsum("ax,notsab,by->notsxy", np.abs(A_T), output_tiles(dout), np.abs(A_T))
    dU = np.einsum("notsxy,nctsxy->ocxy", dM, V)
    return np.einsum("xp,ocxy,yq->ocpq", np.abs(G), dU, np.abs(G))


@st.composite
def winograd_configs(draw):
    """(constructor kwargs, input shape): a 3×3, stride-1 convolution, odd and even sizes,
    any padding (asymmetric too)."""
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 6)), draw(st.integers(1, 11)),
             draw(st.integers(1, 11)))
    padding = draw(st.one_of(st.integers(0, 2), st.just("same"),
                             st.tuples(st.tuples(st.integers(0, 2), st.integers(0, 2)),
                                       st.tuples(st.integers(0, 2), st.integers(0, 2)))))
    cfg = dict(in_channels=shape[1], out_channels=draw(st.integers(1, 5)), kernel_size=3,
               stride=1, padding=padding, dilation=1, bias=draw(st.booleans()))
    return cfg, shape


@pytest.mark.skipif(conv_numba.blas.GEMM is None, reason="Winograd runs its products in BLAS "
                    "from Numba; without it conv_numba never chooses it")
@given(config=winograd_configs(), dtype=st.sampled_from([np.float64, np.float32]),
       seed=st.integers(0, 2**16))
@example(config=({"in_channels": 32, "out_channels": 16, "kernel_size": 3, "stride": 1,
                  "padding": 0, "dilation": 1, "bias": True}, (2, 32, 9, 8)),
         dtype=np.float32, seed=0)       # mnist_cnn's second layer's channels, an odd size
@example(config=({"in_channels": 3, "out_channels": 2, "kernel_size": 3, "stride": 1,
                  "padding": 1, "dilation": 1, "bias": True}, (1, 3, 5, 70)),
         dtype=np.float64, seed=1)       # rows of 35 tiles: three turns of winograd_lanes
@example(config=({"in_channels": 2, "out_channels": 3, "kernel_size": 3, "stride": 1,
                  "padding": 0, "dilation": 1, "bias": False}, (2, 2, 4, 37)),
         dtype=np.float32, seed=2)       # 18 tiles a row, the last one half outside
def test_winograd_equals_loops(config, dtype, seed):
    cfg, shape = config
    assume(window_fits(cfg, shape))
    args = conv_arguments(cfg, shape, dtype, seed)
    with conv_numba.forcing("winograd"):
        assert conv_numba.algorithm(shape, args[1].shape, (1, 1)) == "winograd"
        ours = conv_outputs(conv_numba, *args, dout_seed=seed + 2)
    reference = conv_outputs(conv_loops, *args, dout_seed=seed + 2)
    assert_same_outputs(ours, reference, dtype, f"winograd: {cfg} on {shape} {np.dtype(dtype)}",
                        winograd_bounds(args, seed + 2, dtype))


@requires_torch
@pytest.mark.skipif(conv_numba.blas.GEMM is None, reason="no Winograd without BLAS in Numba")
@settings(max_examples=max(10, settings.default.max_examples // 5))
@given(config=winograd_configs(), seed=st.integers(0, 2**16))
def test_winograd_conv_layer_matches_torch(config, seed):
    """The layer on Winograd's kernels against torch.nn.Conv2d, outputs and every gradient."""
    cfg, shape = config
    assume(window_fits(cfg, shape))
    layer = mc.Conv2D(**cfg, dtype=np.float64, rng=seed)
    with conv_numba.forcing("winograd"):
        compare(layer, normal(shape, seed + 1), "torch", seed=seed, config=f"{cfg} on {shape}")


@pytest.mark.skipif(conv_numba.blas.GEMM is None, reason="NumPy's BLAS is not callable from "
                    "Numba here: the NumPy path is the one in use, and tested everywhere else")
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("bias", [True, False])
def test_blas_in_numba_equals_the_numpy_path(monkeypatch, algorithm, dtype, bias):
    """BLAS called from the compiled loop (one image per thread) against np.matmul called
    from Python on chunks of images (the path without a callable BLAS), chunk = one image."""
    cfg = dict(in_channels=3, out_channels=4, kernel_size=3, stride=(1, 2), padding=1,
               dilation=(2, 1), bias=bias)
    args = conv_arguments(cfg, (9, 3, 9, 8), dtype, 3)     # 9 images: groups of 4, 4 and 1
    algorithm("gemm")
    # one image per product on both sides: a product of another width may round otherwise;
    # BLAS's products on both sides (not the tiles', which have their own test)
    monkeypatch.setattr(conv_numba, "_images_per_product", lambda N, HW: 1)
    monkeypatch.setattr(conv_numba, "TILES", False)
    in_numba = conv_outputs(conv_numba, *args, dout_seed=4)
    monkeypatch.setattr(conv_numba.blas, "GEMM", None)
    monkeypatch.setattr(conv_numba, "_CHUNK_BYTES", 1)
    from_python = conv_outputs(conv_numba, *args, dout_seed=4)
    assert_same_outputs(in_numba, from_python, dtype, f"{cfg} {np.dtype(dtype)}",
                        conv_bounds(args, 4, dtype))
    np.testing.assert_array_equal(in_numba[0], from_python[0])   # the same products


@pytest.mark.skipif(conv_numba.blas.GEMM is None, reason="NumPy's BLAS is not callable from "
                    "Numba here: each image is its own product on the NumPy path")
@given(config=conv_configs(), dtype=st.sampled_from([np.float64, np.float32]),
       images=st.integers(4, 9), per_product=st.integers(2, 5), seed=st.integers(0, 2**16))
@settings(max_examples=30)
def test_gemm_products_of_several_images_equal_loops(config, dtype, images, per_product, seed):
    """gemm puts the im2col matrices of several images side by side in one product (small
    images: one product of B·H_out·W_out columns instead of B thin ones); the batch need not be
    a multiple of B, so the last product is narrower, and the weight gradient is summed in
    groups of a multiple of B images."""
    cfg, shape = config
    shape = (images,) + shape[1:]
    assume(window_fits(cfg, shape))
    cfg["out_channels"] = min(cfg["out_channels"], 3)
    args = conv_arguments(cfg, shape, dtype, seed)
    with pytest.MonkeyPatch.context() as patch, conv_numba.forcing("gemm"):
        patch.setattr(conv_numba, "_images_per_product", lambda N, HW: per_product)
        ours = conv_outputs(conv_numba, *args, dout_seed=seed + 2)
    reference = conv_outputs(conv_loops, *args, dout_seed=seed + 2)
    assert_same_outputs(ours, reference, dtype,
                        f"{per_product} images per product: {cfg} on {shape} {np.dtype(dtype)}",
                        conv_bounds(args, seed + 2, dtype))


@pytest.mark.skipif(conv_numba.blas.GEMM is None, reason="the tiles replace a product of "
                    "BLAS called from Numba, not available here")
@given(config=conv_configs(), dtype=st.sampled_from([np.float64, np.float32]),
       images=st.integers(1, 9), out_channels=st.integers(1, 16), seed=st.integers(0, 2**16))
@settings(max_examples=40)
def test_tiles_equal_loops(config, dtype, images, out_channels, seed):
    """The output and the weights' gradient of up to 16 output channels in register tiles read
    straight from the input (``tile_lanes``), and BLAS on im2col: each within the rounding
    bound of the loops; the input's gradient (BLAS's either way) the same bits. Images in
    groups of 4 (the tiles add each image onto the group's sums), any number of rows (a
    partial last tile of ``ROWS``), any stride, dilation and padding (the offsets in the
    phased input; the output's tiles only without column phases, else BLAS)."""
    cfg, shape = config
    shape = (images,) + shape[1:]
    assume(window_fits(cfg, shape))
    cfg["out_channels"] = out_channels
    args = conv_arguments(cfg, shape, dtype, seed)
    reference = conv_outputs(conv_loops, *args, dout_seed=seed + 2)
    bounds = conv_bounds(args, seed + 2, dtype)
    results, machine = [], conv_numba.TILES
    try:
        with conv_numba.forcing("gemm"):
            for tiled in (False, True):
                conv_numba.TILES = tiled
                results.append(conv_outputs(conv_numba, *args, dout_seed=seed + 2))
                assert_same_outputs(results[-1], reference, dtype,
                                    f"tiles {tiled}: {cfg} on {shape} {np.dtype(dtype)}", bounds)
    finally:
        conv_numba.TILES = machine
    np.testing.assert_array_equal(results[1][1], results[0][1], err_msg=f"{cfg} on {shape}")


def test_gemm_takes_several_small_images_per_product():
    """Small images share a product, large ones do not, and a small batch is still split
    among the threads."""
    assert conv_numba._images_per_product(64, 4) > 1           # resnet_small's last stage
    assert conv_numba._images_per_product(64, 676) == 1        # mnist_cnn's 26×26
    assert conv_numba._images_per_product(64, 100) == 1        # LeNet-5's second layer
    assert conv_numba._images_per_product(3, 4) == 1
    assert conv_numba._images_per_product(64, 4) * 4 <= 64


# im2col's and col2im's short runs, whole vector instructions at a time (lanes_numba)
@given(n=st.integers(0, 50), at=st.integers(0, 5), start=st.integers(0, 5),
       tail=st.integers(0, 3), dtype=st.sampled_from([np.float64, np.float32]),
       seed=st.integers(0, 2**16))
def test_copy_run_copies_the_run_and_nothing_else(n, at, start, tail, dtype, seed):
    """Runs shorter and longer than a vector (LANES values), ending inside the arrays or at
    their very end (tail 0): the lanes past the run are masked off, neither read nor written."""
    from minicnn.kernels import lanes_numba
    rng = np.random.default_rng(seed)
    source = rng.standard_normal(start + n + tail).astype(dtype)
    target = np.full(at + n + tail, -7.0, dtype)
    expected = target.copy()
    expected[at:at + n] = source[start:start + n]
    lanes_numba.copy_run(target, np.uint64(at), source, np.uint64(start), np.uint64(n))
    np.testing.assert_array_equal(target, expected)


@given(n=st.integers(0, 50), at=st.integers(0, 5), start=st.integers(0, 5),
       tail=st.integers(0, 3), dtype=st.sampled_from([np.float64, np.float32]),
       seed=st.integers(0, 2**16))
def test_copy_every_other_copies_every_second_value_and_nothing_else(n, at, start, tail, dtype,
                                                                     seed):
    """The column phase of a stride-2 convolution: source[start], source[start + 2], ... n of
    them; the run's last pair may end at the source's very end (tail 0: its second value is
    not there, and not read)."""
    from minicnn.kernels import lanes_numba
    rng = np.random.default_rng(seed)
    source = rng.standard_normal(start + max(2 * n - 1, 0) + tail).astype(dtype)
    target = np.full(at + n + tail, -7.0, dtype)
    expected = target.copy()
    expected[at:at + n] = source[start:start + 2 * n:2]
    lanes_numba.copy_every_other(target, np.uint64(at), source, np.uint64(start), np.uint64(n))
    np.testing.assert_array_equal(target, expected)


@pytest.mark.parametrize("algorithm", ["gemm", "direct"])
@given(config=conv_configs(), dtype=st.sampled_from([np.float64, np.float32]),
       images=st.integers(1, 9), seed=st.integers(0, 2**16))
@settings(max_examples=40)
def test_vector_runs_give_the_same_bits(algorithm, config, dtype, images, seed):
    """im2col and col2im ("gemm"), and the stride-2 phases ("direct"), in whole vector
    instructions (machines with AVX-512) or in loops (the others): every output and gradient
    the same bits, several images per product included."""
    cfg, shape = config
    assume(window_fits(cfg, shape))
    args = conv_arguments(cfg, (images,) + shape[1:], dtype, seed)
    results, machine = [], conv_numba.VECTOR_RUNS
    try:
        with conv_numba.forcing(algorithm):
            for vector_runs in (False, True):
                conv_numba.VECTOR_RUNS = vector_runs
                results.append(conv_outputs(conv_numba, *args, dout_seed=seed + 2))
    finally:
        conv_numba.VECTOR_RUNS = machine
    for name, plain, vector in zip(NAMES, *results):
        np.testing.assert_array_equal(vector, plain, err_msg=f"{name}: {cfg} on {shape}")


def add_taps_loops(target, at, width, source, start, run, taps, tap_step):
    """lanes_numba.add_taps as the scalar loops of col2im add it: tap after tap per position."""
    for t in range(width):
        for q in range(taps):
            if 0 <= t - q < run:
                target[at + t] += source[start + q * tap_step + t - q]


@given(run=st.integers(1, 20), taps=st.integers(1, 6), data=st.data(),
       dtype=st.sampled_from([np.float64, np.float32]), seed=st.integers(0, 2**16))
def test_add_taps_adds_each_shifted_run_in_order(run, taps, data, dtype, seed):
    """The same bits as the loops (the same sums in the same order), nothing written outside
    [at, at + width); widths up to run + taps − 1 (a whole row of the input's gradient) take
    one, two or three vectors."""
    from minicnn.kernels import lanes_numba
    width = data.draw(st.integers(0, run + taps - 1))
    at, start = data.draw(st.integers(0, 4)), data.draw(st.integers(0, 4))
    tap_step = run + data.draw(st.integers(0, 3))
    rng = np.random.default_rng(seed)
    source = rng.standard_normal(start + taps * tap_step).astype(dtype)
    target = rng.standard_normal(at + width + data.draw(st.integers(0, 3))).astype(dtype)
    expected = target.copy()
    add_taps_loops(expected, at, width, source, start, run, taps, tap_step)
    lanes_numba.add_taps(target, at, width, source, start, run, taps, tap_step)
    np.testing.assert_array_equal(target, expected)


@given(length=st.integers(1, 70), taps=st.integers(1, 30), data=st.data(),
       dtype=st.sampled_from([np.float64, np.float32]), seed=st.integers(0, 2**16))
def test_taps_block_sums_each_channels_taps(length, taps, data, dtype, seed):
    """The direct convolution's register block: each of ``channels`` rows is its bias plus its
    taps' weights times the runs of the image, against float64; the rows past ``channels``
    are not written. Bound: T + 1 terms summed one after the other, each step one rounding of
    the sum and at most one of the product (none where it is fused), so |computed − exact| <=
    γ_(T+1) · (|b| + Σ_t |w_t|·|x_t|), γ_k = k·u / (1 − k·u) (Higham, §3.1)."""
    from minicnn.kernels import lanes_numba
    channels = data.draw(st.integers(1, lanes_numba.CHANNELS))
    rng = np.random.default_rng(seed)
    image = rng.standard_normal(length + 40).astype(dtype)
    offsets = rng.integers(0, 41, taps).astype(np.uint64)
    weights = np.zeros((taps, lanes_numba.CHANNELS), dtype)
    weights[:, :channels] = rng.standard_normal((taps, channels))
    bias = np.zeros(lanes_numba.CHANNELS, dtype)
    bias[:channels] = rng.standard_normal(channels)
    rows = np.full((lanes_numba.CHANNELS, length), 7.0, dtype)
    lanes_numba.taps_block(rows.reshape(-1), length, image, offsets, weights.reshape(-1), bias,
                           channels)
    runs = np.stack([image[int(t):int(t) + length] for t in offsets]).astype(np.float64)
    w64 = weights.astype(np.float64)
    exact = bias[:channels, None].astype(np.float64) + w64[:, :channels].T @ runs
    size = np.abs(bias[:channels, None]).astype(np.float64) + np.abs(w64[:, :channels]).T @ np.abs(runs)
    u = np.finfo(dtype).eps / 2
    gamma = (taps + 1) * u / (1 - (taps + 1) * u)
    assert np.all(np.abs(rows[:channels] - exact) <= gamma * size)
    np.testing.assert_array_equal(rows[channels:], 7.0)


@given(rows=st.integers(1, 40), steps=st.integers(1, 30), data=st.data(),
       dtype=st.sampled_from([np.float64, np.float32]), seed=st.integers(0, 2**16))
def test_tiled_rows_sums_each_rows_terms(rows, steps, data, dtype, seed):
    """``tile_lanes.tiled_rows``: row k of the sums is Σ_t image[at + starts[k] + steps[t]] ·
    d[t] (LANES channels at once, ``channels`` of them kept), added onto the sums or not,
    against float64; any number of rows (whole tiles of ``ROWS`` and a partial last one),
    nothing written past the rows nor in the lanes past ``channels``. Bound: T terms (T + 1
    with the sum added onto) summed one after the other, |computed − exact| <= γ_(T+1) ·
    (|s| + Σ_t |x_t|·|d_t|), γ_k = k·u / (1 − k·u) (Higham, §3.1)."""
    from minicnn.kernels import tile_lanes
    lanes = tile_lanes.LANES
    channels = data.draw(st.integers(1, lanes))
    accumulate = data.draw(st.booleans())
    at = data.draw(st.integers(0, 5))
    rng = np.random.default_rng(seed)
    image = rng.standard_normal(at + 60).astype(dtype)
    starts = rng.integers(0, 30, rows).astype(np.uint64)
    offsets = rng.integers(0, 31, steps).astype(np.uint64)
    d = rng.standard_normal((steps, lanes)).astype(dtype)
    before = rng.standard_normal((rows + 1, lanes)).astype(dtype)
    sums = before.copy()
    tile_lanes.tiled_rows(sums.reshape(-1), image, at, starts, offsets, d.reshape(-1), channels,
                          accumulate)
    x = np.array([[image[at + int(k) + int(t)] for t in offsets] for k in starts], np.float64)
    d64 = d.astype(np.float64)[:, :channels]
    start = before[:rows, :channels].astype(np.float64) if accumulate else 0.0
    exact = start + x @ d64
    size = np.abs(start) + np.abs(x) @ np.abs(d64)
    u = np.finfo(dtype).eps / 2
    gamma = (steps + 1) * u / (1 - (steps + 1) * u)
    assert np.all(np.abs(sums[:rows, :channels] - exact) <= gamma * size)
    np.testing.assert_array_equal(sums[:rows, channels:], before[:rows, channels:])
    np.testing.assert_array_equal(sums[rows:], before[rows:])


@given(rows=st.integers(1, 16), columns=st.integers(1, 40), data=st.data(),
       dtype=st.sampled_from([np.float64, np.float32]), seed=st.integers(0, 2**16))
def test_transpose_turns_the_block_around(rows, columns, data, dtype, seed):
    """``tile_lanes.transpose``: target[at + j·target_step + i] = source[start + i·source_step +
    j] (+ bias[j]), exactly (a copy, and one addition where asked), for blocks of up to 16
    rows and any number of columns (one, two or three turns of 16); nothing else written."""
    from minicnn.kernels import tile_lanes
    source_step = columns + data.draw(st.integers(0, 3))
    target_step = rows + data.draw(st.integers(0, 3))
    start, at = data.draw(st.integers(0, 4)), data.draw(st.integers(0, 4))
    adding = data.draw(st.booleans())
    rng = np.random.default_rng(seed)
    source = rng.standard_normal(start + rows * source_step + 3).astype(dtype)
    target = rng.standard_normal(at + columns * target_step + 20).astype(dtype)
    bias = rng.standard_normal(columns).astype(dtype)
    expected = target.copy()
    for i in range(rows):
        for j in range(columns):
            value = source[start + i * source_step + j]
            expected[at + j * target_step + i] = value + bias[j] if adding else value
    tile_lanes.transpose(target, at, target_step, source, start, source_step, rows, columns,
                         bias, adding)
    np.testing.assert_array_equal(target, expected)


@pytest.mark.parametrize("name", ["direct", "gemm", "winograd"])
@pytest.mark.parametrize("module", ["loops", "fast", "numba"])
def test_need_dx_false_skips_only_dx(algorithm, name, module):
    module = {"loops": conv_loops, "fast": kernels.conv_fast, "numba": conv_numba}[module]
    args = conv_arguments(dict(in_channels=2, out_channels=3, kernel_size=3, padding=1),
                          (2, 2, 6, 5), np.float64, 5)
    algorithm(name)
    full = conv_outputs(module, *args, dout_seed=6)
    partial = conv_outputs(module, *args, dout_seed=6, need_dx=False)
    assert partial[1] is None
    for quantity, a, b in zip(NAMES, partial, full):
        if quantity != "input gradient":
            np.testing.assert_array_equal(a, b, err_msg=quantity)


def test_conv_reads_non_contiguous_input(algorithm):
    x = normal((2, 3, 9, 8), 0).transpose(0, 1, 3, 2)          # a strided view, (2, 3, 8, 9)
    w, b = normal((4, 3, 3, 2), 1), normal(4, 2)
    for name in ("direct", "gemm"):
        algorithm(name)
        ours = conv_outputs(conv_numba, x, w, b, (1, 1), ((1, 0), (0, 1)), (1, 1), 3)
        reference = conv_outputs(conv_loops, x, w, b, (1, 1), ((1, 0), (0, 1)), (1, 1), 3)
        assert_same_outputs(ours, reference, np.float64, name,
                            conv_bounds((x, w, b, (1, 1), ((1, 0), (0, 1)), (1, 1)), 3, np.float64))
    w = normal((4, 3, 3, 3), 1)
    algorithm("winograd")
    args = (x, w, b, (1, 1), ((1, 0), (0, 1)), (1, 1))
    assert_same_outputs(conv_outputs(conv_numba, *args, 3), conv_outputs(conv_loops, *args, 3),
                        np.float64, "winograd", winograd_bounds(args, 3, np.float64))


@requires_torch
@settings(max_examples=max(10, settings.default.max_examples // 5))
@given(config=conv_configs(), seed=st.integers(0, 2**16))
def test_direct_conv_layer_matches_torch(config, seed):
    """test_conv.py runs the default choice against torch; this runs the compiled loops."""
    cfg, shape = config
    assume(window_fits(cfg, shape))
    layer = mc.Conv2D(**cfg, dtype=np.float64, rng=seed)
    with conv_numba.forcing("direct"):
        compare(layer, normal(shape, seed + 1), "torch", seed=seed, config=f"{cfg} on {shape}")


# ----------------------------------------------------------------------------------------
# pooling
# ----------------------------------------------------------------------------------------
#: resnet's 3×3 stride-2 max-pool on rows of more than 16 windows (lanes_numba.window_max_row)
WIDE_POOL = ((2, 2, 7, 71), (3, 3), (2, 2), ((1, 1), (1, 1)))


@pytest.mark.parametrize("kind", WINDOWED)
@given(config=kernel_configs(), seed=seeds, ties=st.booleans(),
       dtype=st.sampled_from([np.float32, np.float64]))
@example(config=WIDE_POOL, seed=0, ties=True, dtype=np.float32)
@example(config=WIDE_POOL, seed=1, ties=False, dtype=np.float64)
def test_numba_pool_equals_loops(kind, config, seed, ties, dtype):
    """Same additions in the same order, same comparisons: the same bits, float32 and float64."""
    shape, kernel, stride, pads = config
    x = (with_ties(shape, seed) if ties else normal(shape, seed)).astype(dtype)
    out_loops, dx_loops = run_kernels(pool_loops, kind, x, seed + 1, kernel, stride, pads)
    out_numba, dx_numba = run_kernels(pool_numba, kind, x, seed + 1, kernel, stride, pads)
    where = f"{kind}, kernel {kernel}, stride {stride}, pads {pads}, x {shape} {x.dtype}"
    assert out_numba.dtype == dx_numba.dtype == dtype, where
    np.testing.assert_array_equal(out_numba, out_loops, err_msg=where)
    np.testing.assert_array_equal(dx_numba, dx_loops, err_msg=where)


@given(config=kernel_configs(), seed=seeds, ties=st.booleans(), nan=st.booleans(),
       dtype=st.sampled_from([np.float32, np.float64]))
@example(config=((2, 3, 8, 6), (2, 2), (2, 2), ((0, 0), (0, 0))), seed=0, ties=True,
         nan=True, dtype=np.float32)                        # the 2×2 kernel
@example(config=WIDE_POOL, seed=2, ties=True, nan=True, dtype=np.float64)
def test_max_pool_for_prediction_gives_the_same_bits(config, seed, ties, nan, dtype):
    """need_cache=False (no_grad: no winners kept) computes the same maxima: the same
    comparisons in the same order, NaN included (a NaN that starts a window stays)."""
    shape, kernel, stride, pads = config
    x = (with_ties(shape, seed) if ties else normal(shape, seed)).astype(dtype)
    if nan:
        x.reshape(-1)[np.random.default_rng(seed).integers(0, x.size, 1 + x.size // 7)] = np.nan
    for module in (pool_numba, pool_loops, kernels.pool_fast):
        out, _ = module.max_forward(x, kernel, stride, pads)
        values, cache = module.max_forward(x, kernel, stride, pads, need_cache=False)
        assert cache is None
        np.testing.assert_array_equal(values, out, err_msg=f"{module.__name__} {config}")


@pytest.mark.parametrize("kind", WINDOWED)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(2, 3, 8, 6), (1, 2, 7, 9), (3, 1, 2, 2), (1, 1, 3, 3),
                                   (1, 2, 6, 71)])
def test_2x2_stride_2_kernels_equal_loops(kind, dtype, shape):
    """The zoo's window has kernels of its own; odd sizes leave a row or column uncovered;
    rows of more than 16 windows take several turns of lanes_numba's vectors."""
    for x in (normal(shape, 0), with_ties(shape, 1), np.full(shape, -0.0)):
        x = x.astype(dtype)
        out_loops, dx_loops = run_kernels(pool_loops, kind, x, 2, (2, 2), (2, 2), ((0, 0), (0, 0)))
        out_numba, dx_numba = run_kernels(pool_numba, kind, x, 2, (2, 2), (2, 2), ((0, 0), (0, 0)))
        np.testing.assert_array_equal(out_numba, out_loops, err_msg=f"{kind} {shape}")
        np.testing.assert_array_equal(dx_numba, dx_loops, err_msg=f"{kind} {shape}")
        assert np.array_equal(np.signbit(dx_numba), np.signbit(dx_loops)), "signs of zeros"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pool_vector_runs_give_the_same_bits(monkeypatch, dtype):
    """Stride-2 max windows and 2×2 spreads in whole vector instructions (machines with
    AVX-512) or in loops (the others): the same maxima, winners and spread gradients, NaN,
    ties and the ReLU's gradient included, rows of more than 16 windows."""
    x = with_ties((2, 3, 9, 71), 0).astype(dtype)
    x.flat[::9] = np.nan
    dy = normal((2, 3, 5, 36), 1).astype(dtype)
    dpool = normal((2, 3, 4, 35), 2).astype(dtype)
    runs = []
    for vector_runs in (False, True):
        monkeypatch.setattr(pool_numba, "VECTOR_RUNS", vector_runs)
        out, (shape, winner) = pool_numba.max_forward(x, (3, 3), (2, 2), ((1, 1), (1, 1)))
        values, _ = pool_numba.max_forward(x, (3, 3), (2, 2), ((1, 1), (1, 1)), False)
        dx = pool_numba.max_backward(dy, (shape, winner))
        _, cache = pool_numba.avg_forward(x, (2, 2), (2, 2), ((0, 0), (0, 0)), True)
        spread = pool_numba.avg_backward(dpool, cache, clip=np.maximum(x, 0))
        runs.append([out, values, winner, dx, spread])
    for plain, vector in zip(*runs):
        np.testing.assert_array_equal(vector, plain)


def test_numba_pool_reads_non_contiguous_input():
    x = normal((2, 3, 9, 8), 0).transpose(0, 1, 3, 2)          # a strided view
    for kind in WINDOWED:
        expected = run_kernels(pool_loops, kind, x, 1, (3, 2), (2, 1), ((1, 0), (0, 1)))
        got = run_kernels(pool_numba, kind, x, 1, (3, 2), (2, 1), ((1, 0), (0, 1)))
        np.testing.assert_array_equal(got[0], expected[0], err_msg=kind)
        np.testing.assert_array_equal(got[1], expected[1], err_msg=kind)


@requires_torch
@pytest.mark.parametrize("kind", WINDOWED)
@settings(max_examples=60)   # test_pool.py runs the default (numba) backend against torch too
@given(config=pool_configs(max_batch=2, max_size=10), seed=seeds)
def test_numba_pool_layers_match_torch(kind, config, seed):
    shape, kernel, stride, padding = config
    layer = WINDOWED[kind](kernel, stride, padding)
    with kernels.using("numba"):
        compare(layer, normal(shape, seed), "torch", seed=seed, rtol=1e-10,
                config=f"{layer!r} on {shape}")


# ----------------------------------------------------------------------------------------
# ReLU and Adam: the NumPy code's bits
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size", [7, 40000])      # one thread, and enough for the parallel one
def test_numba_relu_equals_numpy(dtype, size):
    x = normal(size, 0, dtype)
    x[:6] = [np.nan, -0.0, 0.0, np.inf, -np.inf, 0.5]
    dy = normal(size, 1, dtype)
    layer = mc.ReLU()
    with kernels.using("fast"):
        y_numpy, dx_numpy = layer.forward(x), layer.backward(dy)
    y, dx = layer.forward(x), layer.backward(dy)   # the default: numba
    assert y.dtype == dx.dtype == dtype
    np.testing.assert_array_equal(y, y_numpy)
    np.testing.assert_array_equal(dx, dx_numpy)
    assert np.array_equal(np.signbit(y), np.signbit(y_numpy))
    assert np.array_equal(np.signbit(dx), np.signbit(dx_numpy))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_clip_at_zero_is_the_relu_in_place_and_stores_every_element(dtype):
    """The kernels' in-place ReLU gives ReLU's bits (NaN, ±0, ±inf), and its machine code
    writes every element with a plain store: the form ``a[i] = 0 if a[i] <= 0 else a[i]``
    compiles to a masked store of the zeros only (AVX's vmaskmovps, AVX-512's store under a
    {k} mask), which AMD's CPUs run an order of magnitude slower. Compiled here, afresh: the
    machine code Numba caches on disk cannot be inspected."""
    import re

    import numba

    from minicnn.kernels import elementwise_numba
    x = normal(4099, 0, dtype)
    x[:6] = [np.nan, -0.0, 0.0, np.inf, -np.inf, 0.5]
    clipped = x.copy()
    elementwise_numba.clip_at_zero(clipped)
    np.testing.assert_array_equal(clipped, elementwise_loops.relu_forward(x))
    assert np.array_equal(np.signbit(clipped), np.signbit(elementwise_loops.relu_forward(x)))
    fresh = numba.njit(elementwise_numba.clip_at_zero.py_func)
    fresh(x.copy())
    asm = fresh.inspect_asm(fresh.signatures[0])
    masked_stores = re.findall(r"vp?maskmov\w+\s+%\w+,\s*%\w+,\s*[-\w]*\(.*"
                               r"|vmov\w+\s+%[xyz]mm\d+,\s*[-\w]*\([^)]*\)\s*\{%k.*", asm)
    assert masked_stores == []


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shapes", [(120, 64, 400), (64, 120, 400), (300, 100, 90),
                                    (30, 20, 10)])
def test_two_products_are_the_products(dtype, shapes):
    """``two_products(a, b, c, d)`` is (a @ b, c @ d), transposed views included, side by side
    (from ``_SIDE_BY_SIDE_MACS`` multiply-adds each) or not (the last shape). Each entry is a
    sum of K products, computed by BLAS here and by NumPy's matmul there, in orders that may
    differ: each within γ_K·Σ|a||b| of the exact sum (γ_K = K·u / (1 − K·u), Higham §3.1), so
    the two within 2·γ_K·Σ|a||b|."""
    from minicnn.kernels import matmul_numba
    M, K, N = shapes
    rng = np.random.default_rng(M + K + N)
    a = rng.standard_normal((K, M)).astype(dtype).T           # a view: read transposed
    b, c = rng.standard_normal((K, N)).astype(dtype), rng.standard_normal((N, K)).astype(dtype)
    d = rng.standard_normal((K, M)).astype(dtype)
    side_by_side = M * K * N >= matmul_numba._SIDE_BY_SIDE_MACS
    assert side_by_side == (shapes != (30, 20, 10))
    u = np.finfo(dtype).eps / 2
    gamma = K * u / (1 - K * u)
    for got, (x, y) in zip(matmul_numba.two_products(a, b, c, d), ((a, b), (c, d))):
        assert got.dtype == dtype and got.shape == (x.shape[0], y.shape[1])
        bound = 2 * gamma * (np.abs(x).astype(np.float64) @ np.abs(y).astype(np.float64))
        assert np.all(np.abs(got.astype(np.float64) - np.matmul(x, y)) <= bound)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_serial_adam_kernel_is_vectorised(dtype):
    """Adam's update on one thread (the serial version, also what the parallel one runs for a
    small parameter) is made of vector instructions: sqrt on several lanes at once. Under
    Numba's default error model each division tests its divisor for zero first, and the loop
    stays scalar (7 times slower, ``jit.ERRORS``). Compiled here, afresh, with the kernels'
    options: cached machine code cannot be inspected."""
    import re

    import numba

    from minicnn.kernels import elementwise_numba
    fresh = numba.njit(error_model=jit.ERRORS)(elementwise_numba._adam.serial.py_func)
    arrays = [np.ones(1000, dtype) for _ in range(4)]
    fresh(*arrays, *(dtype(x) for x in (0.1, 0.999, 0.001, 1e-3, 0.5, 1e-8, 0.0, 1e-30)))
    asm = fresh.inspect_asm(fresh.signatures[0])
    assert re.search(r"vsqrtp[sd]\s+%[yz]mm", asm), "the square roots are scalar"


def adam_run(backend, dtype, weight_decay, steps=7, stopping=False):
    """Adam's parameters and moments after ``steps`` steps of random gradients; ``stopping``:
    one step of gradients of every magnitude down to the subnormal floats, then 39 of none,
    so that the moments shrink below np.finfo(dtype).tiny, where they are stored as 0."""
    rng = np.random.default_rng(0)
    params = [mc.Parameter(rng.standard_normal(shape).astype(dtype)) for shape in
              [(3, 4), (40000,), (5,)]]
    frozen = mc.Parameter(rng.standard_normal(3).astype(dtype))
    frozen.trainable = False
    opt = optim.Adam(params + [frozen], lr=0.01, betas=(0.8, 0.99), eps=1e-6,
                     weight_decay=weight_decay)
    smallest = np.log10(np.finfo(dtype).smallest_subnormal)
    with kernels.using(backend):
        for step in range(40 if stopping else steps):
            for p in params + [frozen]:
                p.grad = rng.standard_normal(p.shape).astype(dtype)
                if stopping:
                    p.grad *= (np.logspace(smallest, 0, p.size).astype(dtype).reshape(p.shape)
                               if step == 0 else 0)
            opt.step()
    return [p.data for p in params + [frozen]] + [v for s in opt.state for v in s.values()
                                                   if isinstance(v, np.ndarray)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("weight_decay", [0.0, 0.05])
@pytest.mark.parametrize("stopping", [False, True], ids=["gradients", "gradients stop"])
def test_numba_adam_equals_numpy(dtype, weight_decay, stopping):
    ours = adam_run("numba", dtype, weight_decay, stopping=stopping)
    numpy = adam_run("fast", dtype, weight_decay, stopping=stopping)
    if stopping and weight_decay == 0:   # (with decay the gradient does not stop)
        # some moments were flushed, or the comparison says nothing about it
        tiny = np.finfo(dtype).tiny
        m_unflushed = (np.logspace(np.log10(np.finfo(dtype).smallest_subnormal), 0, 40000)
                       * 0.2 * 0.8 ** 39)
        assert np.sum((m_unflushed > 0) & (m_unflushed < tiny)) > 100
        assert np.sum(ours[6] == 0) > 100           # the (40000,) parameter's first moment
    assert len(ours) == len(numpy) == 4 + 2 * 3
    for a, b in zip(ours, numpy):
        assert a.dtype == dtype
        np.testing.assert_array_equal(a, b)


def test_adam_falls_back_to_numpy_for_a_gradient_of_another_dtype():
    p = mc.Parameter(np.ones(4, dtype=np.float32))
    opt = optim.Adam([p], lr=0.1)
    p.grad = np.full(4, 0.5)        # float64 gradient on a float32 parameter: NumPy's rules
    opt.step()
    q = mc.Parameter(np.ones(4, dtype=np.float32))
    ref = optim.Adam([q], lr=0.1)
    q.grad = np.full(4, 0.5)
    with kernels.using("fast"):
        ref.step()
    np.testing.assert_array_equal(p.data, q.data)


# ----------------------------------------------------------------------------------------
# the training step, threads, the compile notice
# ----------------------------------------------------------------------------------------
def test_train_step_skips_only_the_first_layers_input_gradient():
    """train_step asks the first convolution for no input gradient (nobody reads it); every
    weight ends up exactly as with the step written out in full."""
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((8, 1, 28, 28)).astype(np.float32), rng.integers(0, 10, 8)
    models = [mc.zoo.lenet5(rng=3), mc.zoo.lenet5(rng=3)]
    criteria = [losses.get("cross_entropy") for _ in models]
    opts = [optim.Adam(m.parameters(), lr=1e-2) for m in models]
    first, asked = models[0].layers[0], []
    original = first.backward
    first.backward = lambda dy, need_input_grad=True: (asked.append(need_input_grad)
                                                        or original(dy, need_input_grad))
    for _ in range(2):
        training.train_step(models[0], criteria[0], opts[0], x, y)
        opts[1].zero_grad()                     # the same step written out, dx computed
        criteria[1](models[1](x), y)
        assert models[1].backward(criteria[1].backward()).shape == x.shape
        opts[1].step()
    assert asked == [False, False]
    for p, q in zip(models[0].parameters(), models[1].parameters()):
        np.testing.assert_array_equal(p.data, q.data)


@pytest.mark.parametrize("pooled", [False, True])
@pytest.mark.parametrize("name", [None, "winograd"])
def test_backward_without_input_gradient_gives_the_same_weight_gradients(algorithm, name,
                                                                         pooled):
    """need_input_grad=False returns None and fills every param.grad exactly as the full pass;
    a later full pass still returns dx (nothing is left switched off). Winograd computes both
    gradients in one pass: the weights' the same without the input's. With a ReLU and an
    average pool after the layer, "direct" spreads the pool's gradient image by image next to
    the weights' sums when the input's gradient is not wanted (``_spread_weights``), on the
    whole batch first otherwise: the same sums."""
    algorithm(name)
    pool = [mc.ReLU(), mc.AvgPool2D(2)] if pooled else []
    side = 2 if pooled else 4
    model = mc.Sequential([mc.Conv2D(1, 2, 3), *pool, mc.Flatten(), mc.Dense(2 * side * side, 3)])
    x = np.random.default_rng(0).standard_normal((5, 1, 6, 6)).astype(np.float32)
    dy = np.arange(15, dtype=np.float32).reshape(5, 3)
    model(x)
    assert model.backward(dy, need_input_grad=False) is None
    skipped = [p.grad.copy() for p in model.parameters()]
    model(x)
    assert model.backward(dy).shape == x.shape
    for g, p in zip(skipped, model.parameters()):
        np.testing.assert_array_equal(g, p.grad)


THREAD_VARIABLES = ("NUMBA_NUM_THREADS", "NUMBA_THREADING_LAYER", "OMP_NUM_THREADS")
TWO_THREADS = """
import json, sys
import numpy as np
import numba
import minicnn as mc
from minicnn.kernels import conv_numba
assert numba.get_num_threads() == 2
rng = np.random.default_rng(0)
out = {}
for name, layer in [("direct", mc.Conv2D(3, 4, 3, padding=1, rng=1)),
                    ("gemm", mc.Conv2D(3, 4, 3, padding=1, rng=1)),
                    ("direct", mc.Conv2D(3, 4, 7, stride=2, padding=3, rng=1)),
                    ("winograd", mc.Conv2D(3, 4, 3, padding=(1, 2), rng=1))]:
    conv_numba.force(name)
    x = rng.standard_normal((7, 3, 11, 10)).astype(np.float32)
    y = layer(x)
    out[f"{name} {layer!r}"] = [y.tolist(), layer.backward(np.cos(y)).tolist(),
                                layer.weight.grad.tolist(), layer.bias.grad.tolist()]
conv_numba.force("gemm")         # several small images per product: 13 = 3+3+3+3+1
layer = mc.Conv2D(3, 4, 1, stride=2, rng=1)
x = rng.standard_normal((13, 3, 5, 5)).astype(np.float32)
assert conv_numba._images_per_product(13, 9) == 3
y = layer(x)
out["gemm, 3 images per product"] = [y.tolist(), layer.backward(np.cos(y)).tolist(),
                                     layer.weight.grad.tolist(), layer.bias.grad.tolist()]
conv_numba.force("winograd")     # Conv2D -> ReLU -> MaxPool2D(2) in one kernel, both ways
chain = mc.Sequential([mc.Conv2D(3, 4, 3, padding=1, rng=2), mc.ReLU(), mc.MaxPool2D(2)])
y = chain(rng.standard_normal((7, 3, 11, 10)).astype(np.float32))
out["winograd chain"] = [y.tolist(), chain.backward(np.cos(y)).tolist(),
                         chain[0].weight.grad.tolist(), chain[0].bias.grad.tolist()]
conv_numba.force(None)
for pool in (mc.MaxPool2D(2), mc.AvgPool2D(3, 2, 1)):
    y = pool(rng.standard_normal((9, 4, 10, 11)).astype(np.float32))
    out[repr(pool)] = [y.tolist(), pool.backward(np.sin(y)).tolist()]
chain = mc.Sequential([mc.ReLU(), mc.AvgPool2D(2)])     # the pool takes the ReLU's gradient
y = chain(rng.standard_normal((9, 4, 10, 11)).astype(np.float32))
out["relu, avg-pool"] = [y.tolist(), chain.backward(np.sin(y)).tolist()]
x = rng.standard_normal(50000).astype(np.float32)
relu = mc.ReLU()
out["relu"] = [relu(x).tolist(), relu.backward(np.cos(x)).tolist()]
bn = mc.BatchNorm2D(3)
bn.weight.data[...] = [0.5, 1.0, 2.0]
x = rng.standard_normal((16, 3, 33, 33)).astype(np.float32)
y = bn(x)
out["bn"] = [y.tolist(), bn.backward(np.cos(y)).tolist(), bn.weight.grad.tolist(),
             bn.bias.grad.tolist(), bn.running_var.tolist(), bn.eval()(x).tolist()]
# 64·2000·100 multiply-adds in each product: split by columns; then 1000·300·64: the forward
# pass and the input gradient split by rows
# and 64·400·120: the two products of the backward pass side by side
for name, batch, dense in (("dense", 64, mc.Dense(2000, 100, rng=2)),
                           ("dense rows", 1000, mc.Dense(300, 64, rng=3)),
                           ("dense side by side", 64, mc.Dense(400, 120, rng=4))):
    x = rng.standard_normal((batch, dense.in_features)).astype(np.float32)
    y = dense(x)
    out[name] = [y.tolist(), dense.backward(np.cos(y)).tolist(), dense.weight.grad.tolist()]
json.dump({"threads": numba.get_num_threads(), "layer": numba.threading_layer(), "out": out},
          sys.stdout)
"""


def test_two_threads_give_the_bits_of_one(tmp_path):
    """The parallel versions (prange over images, planes, elements) on two threads: no two
    iterations write the same memory, so the results are those of the serial versions."""
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    env |= {"NUMBA_NUM_THREADS": "2", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", TWO_THREADS], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    two = json.loads(done.stdout)
    assert two["threads"] == 2 and two["layer"] in ("omp", "workqueue", "tbb")
    one = subprocess.run([sys.executable, "-c", TWO_THREADS.replace("== 2", "== 1")], cwd=ROOT,
                         env=env | {"NUMBA_NUM_THREADS": "1"}, capture_output=True, text=True,
                         timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    assert json.loads(one.stdout)["out"] == two["out"]


def test_numba_follows_omp_num_threads_when_not_told_otherwise():
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    code = "import numba; from minicnn.kernels import jit; print(numba.get_num_threads())"
    for extra, expected in [({"OMP_NUM_THREADS": "1"}, "1"),
                            ({"OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "2"}, "2")]:
        done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env | extra,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.split() == [expected], extra


def test_numba_backend_serves_the_numba_kernels():
    assert kernels.DEFAULT == "numba"
    with kernels.using("numba"):
        assert kernels.pool() is pool_numba and kernels.conv() is conv_numba
        assert kernels.elementwise() is elementwise_numba and kernels.norm() is norm_numba
    with kernels.using("loops"):
        assert kernels.pool() is pool_loops and kernels.conv() is conv_loops
        assert kernels.elementwise() is elementwise_loops and kernels.norm() is norm_loops


def test_loops_backend_from_the_environment():
    env = {k: v for k, v in os.environ.items() if k != "MINICNN_KERNELS"}
    code = "import minicnn; print(minicnn.kernels.backend())"
    for value, expected in [(None, "numba"), ("loops", "loops"), ("fast", "fast")]:
        run_env = env if value is None else env | {"MINICNN_KERNELS": value}
        done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=run_env,
                              capture_output=True, text=True, timeout=120)
        assert done.stdout.split() == [expected], done.stderr[-2000:]


def test_compile_notice_is_printed_once(monkeypatch, capsys):
    class NotCompiled:            # no signatures yet, and no on-disk cache to load from
        signatures = []
    monkeypatch.setattr(jit, "_noticed", False)
    jit.notice_once(NotCompiled())
    jit.notice_once(NotCompiled())
    assert capsys.readouterr().err == "compiling kernels (first run only)\n"


def test_no_compile_notice_once_compiled(monkeypatch, capsys):
    pool_numba.max_forward(normal((1, 1, 4, 4), 0), (2, 2), (2, 2), ((0, 0), (0, 0)))
    monkeypatch.setattr(jit, "_noticed", False)
    monkeypatch.setattr(jit, "_checked", set())
    jit.notice_once(pool_numba._max_forward_2x2.version())
    assert capsys.readouterr().err == ""


def test_compile_counts_count_kernel_versions():
    compiled, loaded = jit.compile_counts()
    pool_numba.max_forward(normal((1, 1, 4, 4), 0), (2, 2), (2, 2), ((0, 0), (0, 0)))
    after = jit.compile_counts()
    assert sum(after) >= compiled + loaded          # nothing is forgotten
    assert all(isinstance(n, int) and n >= 0 for n in after)
    assert sum(after) > 0                           # this module ran kernels: some were needed


@pytest.mark.parametrize("make", [lambda: mc.Conv2D(2, 3, 3, padding=1, dtype=np.float16, rng=0),
                                  lambda: mc.MaxPool2D(2), lambda: mc.AvgPool2D(3, 2, 1),
                                  lambda: mc.SumPool2D(2), lambda: mc.ReLU(),
                                  lambda: mc.BatchNorm2D(2, dtype=np.float16)])
def test_other_dtypes_go_to_the_numpy_kernels(make):
    """float16 is not compiled: the layer still works, through the NumPy kernels, in float16."""
    x = normal((2, 2, 6, 6), 0, np.float16)
    results = {}
    for backend in ("numba", "fast"):
        layer = make()
        with kernels.using(backend):
            y = layer.forward(x)
            results[backend] = [y, layer.backward(np.ones_like(y))] + [p.grad for p in
                                                                       layer.parameters()]
    for ours, numpy in zip(results["numba"], results["fast"]):
        assert ours.dtype == np.float16
        np.testing.assert_array_equal(ours, numpy)


THREAD_COUNT = """
import json
import numpy as np
from minicnn.kernels import conv_numba, matmul_numba
get = conv_numba.blas._FOUND[3]
rng = np.random.default_rng(0)
x = rng.standard_normal((8, 32, 16, 16)).astype(np.float32)
w = rng.standard_normal((32, 32, 3, 3)).astype(np.float32)
counts = [get()]
for name in ("gemm", "winograd") * 10:
    with conv_numba.forcing(name):
        out, cache = conv_numba.forward(x, w, None, (1, 1), ((1, 1), (1, 1)), (1, 1))
        conv_numba.backward(out, cache)
    counts.append(get())
rows = out.reshape(8, -1)
matmul_numba.matmul(rows, rows.T[:, :300])        # the Dense layer's product, split
counts.append(get())
print(json.dumps(counts))
"""


@pytest.mark.skipif(conv_numba.blas.GEMM is None, reason="NumPy's BLAS is not callable from "
                    "Numba here: no kernel changes its thread count")
def test_blas_thread_count_is_the_same_after_the_kernels():
    """The kernels run each product on one thread (openblas_set_num_threads_local, which is
    process-wide in NumPy's OpenBLAS) and put the count back, so that a Dense layer's np.matmul
    after a convolution gets every thread again. Two Numba threads putting it back at once
    left it at 1 (here from the first pass on, before the fix): two threads, in a process of its
    own, as test_two_threads_give_the_bits_of_one."""
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    env |= {"NUMBA_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2", "OMP_NUM_THREADS": "1",
            "MINICNN_COMPILE": "wait"}
    done = subprocess.run([sys.executable, "-c", THREAD_COUNT], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout) == [2] * 22


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(64, 9216, 128), (128, 64, 9216), (1000, 300, 64),
                                   (1000, 300, 3), (3, 5, 7), (2, 4096, 512)])
@pytest.mark.parametrize("layout", ["NN", "NT", "TN", "TT"])
def test_matmul_splits_over_the_threads_and_equals_numpy(dtype, shape, layout):
    """matmul_numba.matmul (the Dense layer's product) against np.matmul, for operands stored
    as they are or transposed (w.T), shapes that split over the threads by columns ((M, K, N)
    = (64, 9216, 128), (128, 64, 9216)) or by rows ((1000, 300, 64)) and shapes that do not. Both are sums of K products: each within γ_K·Σ|a|·|b| of the exact value (Higham
    §3.1), so within 2·γ_K·(|a| @ |b|) of each other (the same bound as the convolutions)."""
    matmul_numba = pytest.importorskip("minicnn.kernels.matmul_numba")
    M, K, N = shape
    rng = np.random.default_rng(M + K + N)
    a = rng.standard_normal((M, K) if layout[0] == "N" else (K, M)).astype(dtype)
    b = rng.standard_normal((K, N) if layout[1] == "N" else (N, K)).astype(dtype)
    a, b = (a if layout[0] == "N" else a.T), (b if layout[1] == "N" else b.T)
    got, expected = matmul_numba.matmul(a, b), np.matmul(a, b)
    assert got.dtype == dtype and got.shape == (M, N) and got.flags.c_contiguous
    u = np.finfo(dtype).eps / 2
    bound = 2 * K * u / (1 - K * u) * (np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64))
    assert np.all(np.abs(got.astype(np.float64) - expected) <= bound)


def test_matmul_refuses_shapes_that_do_not_fit():
    matmul_numba = pytest.importorskip("minicnn.kernels.matmul_numba")
    with pytest.raises(ValueError, match=r"\(3, 4\) and \(5, 2\)"):
        matmul_numba.matmul(np.ones((3, 4)), np.ones((5, 2)))

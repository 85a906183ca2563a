"""The Numba kernels against the teaching loops (bit for bit) and against PyTorch (layers)."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from test_pool import WINDOWED, kernel_configs, normal, pool_configs, run_kernels, seeds, with_ties
from twins import compare, requires_torch

from minicnn import kernels
from minicnn.kernels import pool_loops

pool_numba = pytest.importorskip("minicnn.kernels.pool_numba")


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny tensors: torch's thread pool costs more than it saves on a busy 2-core box."""
    torch = pytest.importorskip("torch")
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.mark.parametrize("kind", WINDOWED)
@given(config=kernel_configs(), seed=seeds, ties=st.booleans(),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_numba_pool_equals_loops(kind, config, seed, ties, dtype):
    """Same loops, same order of additions: the same bits, in float32 as in float64."""
    shape, kernel, stride, pads = config
    x = (with_ties(shape, seed) if ties else normal(shape, seed)).astype(dtype)
    out_loops, dx_loops = run_kernels(pool_loops, kind, x, seed + 1, kernel, stride, pads)
    out_numba, dx_numba = run_kernels(pool_numba, kind, x, seed + 1, kernel, stride, pads)
    where = f"{kind}, kernel {kernel}, stride {stride}, pads {pads}, x {shape} {x.dtype}"
    assert out_numba.dtype == dx_numba.dtype == dtype, where
    np.testing.assert_array_equal(out_numba, out_loops, err_msg=where)
    np.testing.assert_array_equal(dx_numba, dx_loops, err_msg=where)


def test_numba_pool_reads_non_contiguous_input():
    x = normal((2, 3, 9, 8), 0).transpose(0, 1, 3, 2)          # a strided view
    for kind in WINDOWED:
        expected = run_kernels(pool_loops, kind, x, 1, (3, 2), (2, 1), ((1, 0), (0, 1)))
        got = run_kernels(pool_numba, kind, x, 1, (3, 2), (2, 1), ((1, 0), (0, 1)))
        np.testing.assert_array_equal(got[0], expected[0], err_msg=kind)
        np.testing.assert_array_equal(got[1], expected[1], err_msg=kind)


@requires_torch
@pytest.mark.parametrize("kind", WINDOWED)
@hsettings(max_examples=60)   # test_pool.py runs the numba backend against torch too
@given(config=pool_configs(max_batch=2, max_size=10), seed=seeds)
def test_numba_pool_layers_match_torch(kind, config, seed):
    shape, kernel, stride, padding = config
    layer = WINDOWED[kind](kernel, stride, padding)
    with kernels.using("numba"):
        compare(layer, normal(shape, seed), "torch", seed=seed, rtol=1e-10,
                config=f"{layer!r} on {shape}")


def test_numba_backend_serves_the_numba_pool_kernels():
    with kernels.using("numba"):
        assert kernels.pool() is pool_numba
    with kernels.using("loops"):
        assert kernels.pool() is pool_loops


def test_compile_notice_is_printed_once(monkeypatch, capsys):
    class NotCompiled:            # no signatures yet, and no on-disk cache to load from
        signatures = []
    monkeypatch.setattr(pool_numba, "_noticed", False)
    pool_numba.notice_once(NotCompiled())
    pool_numba.notice_once(NotCompiled())
    assert capsys.readouterr().err == "compiling kernels (first run only)\n"


def test_no_compile_notice_once_compiled(monkeypatch, capsys):
    pool_numba.max_forward(normal((1, 1, 4, 4), 0), (2, 2), (2, 2), ((0, 0), (0, 0)))
    monkeypatch.setattr(pool_numba, "_noticed", False)
    pool_numba.notice_once(pool_numba._max_forward)
    assert capsys.readouterr().err == ""

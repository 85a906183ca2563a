"""Optimizers against torch.optim and keras.optimizers, step for step.

No minicnn layers are involved: the parameters are bare ``Parameter`` objects and the
gradient comes from a fixed least-squares problem,

    loss = 0.5 · ||Σ_i A_i vec(p_i) − t||²,   d loss / d p_i = A_iᵀ r,   r = Σ_i A_i vec(p_i) − t

computed in NumPy from each framework's OWN current weights (so a wrong step in one
framework shows up in its later gradients too). The parameters have different shapes so
that a mix-up between them, or a reshape error, cannot pass.
"""
import json

import numpy as np
import pytest

from minicnn.core.errors import ShapeError
from minicnn.optim import SGD, Adam, KerasAdam
from minicnn.core.parameter import Parameter
from twins import assert_close, keras, requires_keras, requires_torch

try:
    import torch
except ImportError:
    torch = None

SHAPES = [(3, 4), (4,), (2, 2, 3)]
NAMES = ["weight", "bias", "kernel"]
STEPS = 20


def _problem():
    rng = np.random.default_rng(1234)
    sizes = [int(np.prod(s)) for s in SHAPES]
    A = rng.standard_normal((10, sum(sizes))) / np.sqrt(sum(sizes))
    t = rng.standard_normal(10)
    init = [rng.standard_normal(s) for s in SHAPES]
    blocks = np.split(A, np.cumsum(sizes)[:-1], axis=1)
    return blocks, t, init


BLOCKS, TARGET, INIT = _problem()


def gradients(values, scale=1.0):
    """d loss / d p_i for the current values (list of arrays), in the values' dtype."""
    dtype = values[0].dtype
    r = sum(B @ v.astype(np.float64).ravel() for B, v in zip(BLOCKS, values)) - TARGET
    return [(scale * (B.T @ r)).reshape(v.shape).astype(dtype) for B, v in zip(BLOCKS, values)]


def make_params(dtype=np.float64, init=INIT):
    return [Parameter(np.array(v, dtype=dtype), name=n) for v, n in zip(init, NAMES)]


def run_ours(opt, params, steps, *, scale=1.0, lr_at=None, start=0):
    for k in range(start, start + steps):
        if lr_at is not None:
            opt.lr = lr_at(k)
        for p, g in zip(params, gradients([p.data for p in params], scale)):
            p.grad[...] = g
        opt.step()
    return [p.data.copy() for p in params]


def run_torch(make_opt, dtype=np.float64, steps=STEPS, *, frozen=(), lr_at=None):
    tparams = [torch.tensor(np.array(v, dtype=dtype), requires_grad=True) for v in INIT]
    opt = make_opt(tparams)
    for k in range(steps):
        if lr_at is not None:
            for group in opt.param_groups:
                group["lr"] = lr_at(k)
        grads = gradients([p.detach().numpy() for p in tparams])
        for i, (p, g) in enumerate(zip(tparams, grads)):
            p.grad = None if i in frozen else torch.from_numpy(g)  # None: torch skips it
        opt.step()
    return [p.detach().numpy().copy() for p in tparams]


def run_keras(make_opt, dtype, steps=STEPS, *, scale=1.0, lr_at=None, start=0, variables=None):
    k = keras()
    if variables is None:
        variables = [k.Variable(np.array(v, dtype=dtype), dtype=np.dtype(dtype).name)
                     for v in INIT]
    opt = make_opt(k.optimizers)
    for step in range(start, start + steps):
        if lr_at is not None:
            opt.learning_rate = lr_at(step)
        grads = gradients([v.numpy() for v in variables], scale)
        opt.apply_gradients(zip(grads, variables))
    return [v.numpy().copy() for v in variables]


def assert_all_close(ours, theirs, rtol, config):
    for name, a, b in zip(NAMES, ours, theirs):
        assert_close(f"{name} after the steps", a, b, rtol=rtol, config=config)


# ------------------------------------------------------------------------------------------
# PyTorch, float64, tight
# ------------------------------------------------------------------------------------------
SGD_CONFIGS = [
    dict(lr=0.1),
    dict(lr=0.1, momentum=0.9),
    dict(lr=0.1, momentum=0.9, nesterov=True),
    dict(lr=0.1, weight_decay=0.05),
    dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.01),
]


@requires_torch
@pytest.mark.parametrize("kw", SGD_CONFIGS, ids=str)
def test_sgd_matches_torch(kw):
    params = make_params()
    ours = run_ours(SGD(params, **kw), params, STEPS)
    theirs = run_torch(lambda ps: torch.optim.SGD(ps, **kw))
    assert_all_close(ours, theirs, 1e-12, f"SGD {kw}")
    # the problem must actually move the weights, or the comparison says nothing
    assert max(np.abs(o - i).max() for o, i in zip(ours, INIT)) > 1e-2


ADAM_CONFIGS = [
    dict(lr=0.01),
    dict(lr=0.01, weight_decay=0.05),
    dict(lr=0.02, betas=(0.8, 0.99), eps=1e-6),
]


@requires_torch
@pytest.mark.parametrize("kw", ADAM_CONFIGS, ids=str)
def test_adam_matches_torch(kw):
    params = make_params()
    ours = run_ours(Adam(params, **kw), params, STEPS)
    theirs = run_torch(lambda ps: torch.optim.Adam(ps, **kw))
    assert_all_close(ours, theirs, 1e-12, f"Adam {kw}")
    assert max(np.abs(o - i).max() for o, i in zip(ours, INIT)) > 1e-2


@requires_torch
def test_adam_matches_torch_with_a_learning_rate_schedule():
    def lr_at(k):
        return 0.02 if k < 10 else 0.002
    params = make_params()
    ours = run_ours(Adam(params, lr=0.02), params, STEPS, lr_at=lr_at)
    theirs = run_torch(lambda ps: torch.optim.Adam(ps, lr=0.02), lr_at=lr_at)
    assert_all_close(ours, theirs, 1e-12, "Adam, lr 0.02 then 0.002")


@requires_torch
def test_adam_stores_subnormal_moments_as_zero_and_otherwise_moves_as_torch():
    """A weight whose gradient stops (behind a ReLU that no longer fires) keeps a first moment
    m that shrinks by β1 a step, down through the subnormal floats (below np.finfo(dtype).tiny)
    to 0. PyTorch keeps those values; minicnn's Adam stores 0 instead, as a processor's
    flush-to-zero mode would. The step such an m makes (lr · m / ε at most) is far below the
    weights' rounding, so the weights are PyTorch's.

    One step of gradients 10^-315 .. 1 and then 59 steps of none: PyTorch's m and v end
    normal, subnormal or 0 depending on the first gradient. The tolerance, 1e-12 relative
    element by element: each of the 60 steps rounds m and v once or twice in each framework
    (at most 2·60 roundings of 2^-53 apart, 1.3e-14), with room to spare."""
    dtype = np.float64
    tiny = np.finfo(dtype).tiny
    first = np.logspace(-315, 0, 400)
    start = np.random.default_rng(7).standard_normal(first.size)
    ours = Parameter(start.copy())
    opt = Adam([ours], lr=0.01, betas=(0.8, 0.99))
    theirs = torch.tensor(start.copy(), requires_grad=True)
    torch_opt = torch.optim.Adam([theirs], lr=0.01, betas=(0.8, 0.99))
    for step in range(60):
        g = first if step == 0 else np.zeros_like(first)
        ours.grad = g.copy()
        opt.step()
        theirs.grad = torch.from_numpy(g.copy())
        torch_opt.step()
    for name in ("exp_avg", "exp_avg_sq"):
        mine, torch_moment = opt.state[0][name], torch_opt.state[theirs][name].numpy()
        subnormal = (torch_moment != 0) & (np.abs(torch_moment) < tiny)
        # without subnormals in PyTorch's moments this test would show nothing
        assert subnormal.sum() >= 5, f"{name}: PyTorch's moments hold no subnormal floats"
        np.testing.assert_array_equal(mine[subnormal], 0, err_msg=f"{name}, where subnormal")
        np.testing.assert_allclose(mine[~subnormal], torch_moment[~subnormal], rtol=1e-12,
                                   atol=0, err_msg=f"{name}, where PyTorch's is normal or 0")
    assert_close("weights after the steps", ours.data, theirs.detach().numpy(), rtol=1e-12)
    assert np.abs(ours.data - start).max() > 1e-3        # the first step moved the weights


@requires_torch
@pytest.mark.parametrize("make", [lambda ps: SGD(ps, lr=0.1, momentum=0.9),
                                  lambda ps: Adam(ps, lr=0.01)], ids=["SGD", "Adam"])
def test_frozen_parameter_is_skipped_like_torch_skips_grad_none(make):
    params = make_params()
    params[1].trainable = False
    opt = make(params)
    ours = run_ours(opt, params, STEPS)
    np.testing.assert_array_equal(ours[1], INIT[1])
    assert opt.state[1] == {}

    def make_torch(ps):
        return (torch.optim.SGD(ps, lr=0.1, momentum=0.9) if isinstance(opt, SGD)
                else torch.optim.Adam(ps, lr=0.01))
    theirs = run_torch(make_torch, frozen={1})
    assert_all_close(ours, theirs, 1e-12, f"{type(opt).__name__}, bias frozen")


# ------------------------------------------------------------------------------------------
# Keras. Its learning rate is a float32 variable, and it casts Python-float hyperparameters
# to the variable's dtype THROUGH float32 (keras.ops.cast(0.9, "float64") is 0.8999999761581421).
# So float64 runs use values that float32 holds exactly (lr 2**-k, momentum and betas with
# few binary digits) and compare tightly; float32 runs use the usual values and compare to
# float32 rounding.
# ------------------------------------------------------------------------------------------
KERAS_DTYPES = [(np.float32, 1e-5), (np.float64, 1e-12)]
MOMENTUM = {np.float32: 0.9, np.float64: 0.875}
BETAS = {np.float32: (0.9, 0.999), np.float64: (0.875, 1 - 2.0 ** -9)}


@requires_keras
@pytest.mark.parametrize("dtype,rtol", KERAS_DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("use_momentum,nesterov", [(False, False), (True, False), (True, True)])
def test_sgd_matches_keras_with_constant_lr(dtype, rtol, use_momentum, nesterov):
    """Keras' v = momentum·v − lr·g; p += v  equals PyTorch's form while lr is constant."""
    lr = 2.0 ** -4
    momentum = MOMENTUM[dtype] if use_momentum else 0.0
    params = make_params(dtype)
    ours = run_ours(SGD(params, lr=lr, momentum=momentum, nesterov=nesterov), params, STEPS)
    theirs = run_keras(lambda o: o.SGD(learning_rate=lr, momentum=momentum, nesterov=nesterov),
                       dtype)
    assert all(o.dtype == dtype for o in ours)
    assert_all_close(ours, theirs, rtol, f"SGD momentum={momentum} nesterov={nesterov} {dtype}")


@requires_keras
@requires_torch
def test_sgd_momentum_differs_from_keras_once_lr_changes():
    """PyTorch rescales the accumulated momentum by the NEW lr; Keras keeps the old lr in it.

    minicnn follows PyTorch: it matches torch across the change, agrees with Keras up to
    the change, and differs from Keras after it by far more than rounding.
    """
    lr0, lr1, switch = 2.0 ** -4, 2.0 ** -8, 10

    def lr_at(k):
        return lr0 if k < switch else lr1

    params = make_params()
    opt = SGD(params, lr=lr0, momentum=0.875)
    before = run_ours(opt, params, switch, lr_at=lr_at)
    k = keras()
    variables = [k.Variable(np.array(v), dtype="float64") for v in INIT]
    kopt = k.optimizers.SGD(learning_rate=lr0, momentum=0.875)
    for step in range(STEPS):
        kopt.learning_rate = lr_at(step)
        kopt.apply_gradients(zip(gradients([v.numpy() for v in variables]), variables))
        if step == switch - 1:
            assert_all_close(before, [v.numpy() for v in variables], 1e-12, "before the change")
    after = run_ours(opt, params, STEPS - switch, lr_at=lr_at, start=switch)
    theirs_torch = run_torch(lambda ps: torch.optim.SGD(ps, lr=lr0, momentum=0.875), lr_at=lr_at)
    assert_all_close(after, theirs_torch, 1e-12, "SGD with momentum, lr changed, vs torch")
    theirs_keras = [v.numpy() for v in variables]
    moved = max(np.abs(a - i).max() for a, i in zip(theirs_keras, INIT))
    gap = max(np.abs(a - b).max() for a, b in zip(after, theirs_keras))
    assert gap > 0.01 * moved, f"expected PyTorch's and Keras' momentum to differ: {gap:.3e}"


@requires_keras
@pytest.mark.parametrize("dtype,rtol", KERAS_DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("epsilon", [1e-7, 1e-3])
def test_keras_adam_matches_keras(dtype, rtol, epsilon):
    lr = 2.0 ** -6
    kw = dict(beta_1=BETAS[dtype][0], beta_2=BETAS[dtype][1], epsilon=epsilon)
    params = make_params(dtype)
    ours = run_ours(KerasAdam(params, lr=lr, **kw), params, STEPS)
    theirs = run_keras(lambda o: o.Adam(learning_rate=lr, **kw), dtype)
    assert all(o.dtype == dtype for o in ours)
    assert_all_close(ours, theirs, rtol, f"KerasAdam {kw} {dtype}")
    assert max(np.abs(o - i).max() for o, i in zip(ours, INIT)) > 1e-2


@requires_keras
@requires_torch
def test_torch_adam_and_keras_adam_differ_where_epsilon_matters():
    """Same lr, betas and epsilon; only WHERE epsilon is added differs.

    With gradients ~1e-9 (below epsilon = 1e-7) the two take steps of very different
    size; with ordinary gradients they agree closely. Each still matches its framework.
    """
    lr, eps, (beta1, beta2) = 2.0 ** -6, 1e-7, BETAS[np.float64]
    moves = {}
    for scale in (1e-9, 1.0):
        p_torch, p_keras = make_params(), make_params()
        opt_torch = Adam(p_torch, lr=lr, betas=(beta1, beta2), eps=eps)
        opt_keras = KerasAdam(p_keras, lr=lr, beta_1=beta1, beta_2=beta2, epsilon=eps)
        a = run_ours(opt_torch, p_torch, STEPS, scale=scale)
        b = run_ours(opt_keras, p_keras, STEPS, scale=scale)
        tparams = [torch.tensor(v, requires_grad=True) for v in INIT]
        topt = torch.optim.Adam(tparams, lr=lr, betas=(beta1, beta2), eps=eps)
        for _ in range(STEPS):
            for p, g in zip(tparams, gradients([p.detach().numpy() for p in tparams], scale)):
                p.grad = torch.from_numpy(g)
            topt.step()
        assert_all_close(a, [p.detach().numpy() for p in tparams], 1e-12, f"Adam, scale {scale}")
        kb = run_keras(lambda o: o.Adam(learning_rate=lr, beta_1=beta1, beta_2=beta2,
                                              epsilon=eps), np.float64, scale=scale)
        assert_all_close(b, kb, 1e-12, f"KerasAdam, scale {scale}")
        moves[scale] = [np.concatenate([(x - i).ravel() for x, i in zip(run, INIT)])
                        for run in (a, b)]
    tiny_torch, tiny_keras = moves[1e-9]
    # PyTorch's step is several times Keras': Keras' epsilon acts 1/sqrt(1 − β2) ≈ 23 times
    # larger at step 1 (β2 = 1 − 2⁻⁹), and still ~5 times larger at step 20
    assert np.linalg.norm(tiny_torch) > 3 * np.linalg.norm(tiny_keras)
    big_torch, big_keras = moves[1.0]
    assert np.linalg.norm(big_torch - big_keras) < 1e-4 * np.linalg.norm(big_keras)


# ------------------------------------------------------------------------------------------
# state_dict: plain types, exact resume, clear errors
# ------------------------------------------------------------------------------------------
OPTIMIZERS = {
    "SGD": lambda ps: SGD(ps, lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
    "Adam": lambda ps: Adam(ps, lr=0.01, betas=(0.85, 0.995), weight_decay=0.01),
    "KerasAdam": lambda ps: KerasAdam(ps, lr=0.01, beta_1=0.85),
}
FRESH = {"SGD": lambda ps: SGD(ps, lr=1.0), "Adam": lambda ps: Adam(ps),
         "KerasAdam": lambda ps: KerasAdam(ps)}


def save(tmp_path, sd):
    """Arrays into an .npz, scalars into JSON, as a checkpoint would; then read both back."""
    arrays = {k: v for k, v in sd.items() if isinstance(v, np.ndarray)}
    scalars = {k: v for k, v in sd.items() if not isinstance(v, np.ndarray)}
    np.savez(tmp_path / "opt.npz", **arrays)
    (tmp_path / "opt.json").write_text(json.dumps(scalars))
    with np.load(tmp_path / "opt.npz", allow_pickle=False) as f:
        loaded = {k: f[k] for k in f.files}
    loaded.update(json.loads((tmp_path / "opt.json").read_text()))
    return loaded


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("which", list(OPTIMIZERS))
def test_resume_from_state_dict_is_bit_identical(tmp_path, which, dtype):
    params = make_params(dtype)
    straight = run_ours(OPTIMIZERS[which](params), params, 12)

    params = make_params(dtype)
    opt = OPTIMIZERS[which](params)
    run_ours(opt, params, 5)
    sd = save(tmp_path, opt.state_dict())
    weights = [p.data.copy() for p in params]
    run_ours(opt, params, 3)  # the saved state must not follow the optimizer on

    resumed = make_params(dtype, init=weights)
    opt2 = FRESH[which](resumed)  # other hyperparameters: load_state_dict restores them
    opt2.load_state_dict(sd)
    out = run_ours(opt2, resumed, 7)
    for name, a, b in zip(NAMES, out, straight):
        assert a.dtype == b.dtype == dtype
        assert np.array_equal(a, b), f"{which}: {name} differs after resuming"


@pytest.mark.parametrize("which", list(OPTIMIZERS))
def test_state_dict_holds_only_plain_values(tmp_path, which):
    params = make_params()
    opt = OPTIMIZERS[which](params)
    run_ours(opt, params, 2)
    sd = opt.state_dict()
    for key, value in sd.items():
        assert type(value) in (np.ndarray, int, float, bool, str), (key, type(value))
    json.dumps({k: v for k, v in sd.items() if not isinstance(v, np.ndarray)})
    np.savez(tmp_path / "all.npz", **sd)  # scalars too: npz makes them 0-d arrays
    with np.load(tmp_path / "all.npz", allow_pickle=False) as f:
        back = {k: f[k] for k in f.files}
    fresh = FRESH[which](params)
    fresh.load_state_dict(back)
    again = fresh.state_dict()
    assert again.keys() == sd.keys()
    for key in sd:
        assert type(again[key]) is type(sd[key]), key
        assert np.array_equal(again[key], sd[key]), key
    assert any(k.startswith("state.2.") for k in sd) == (which != "SGD" or opt.momentum != 0)


def test_load_state_dict_names_the_parameter_and_both_shapes():
    params = make_params()
    opt = Adam(params, lr=0.01)
    run_ours(opt, params, 1)
    sd = opt.state_dict()
    other = [Parameter(np.zeros(s), name=n) for s, n in zip([(3, 4), (5,), (2, 2, 3)], NAMES)]
    fresh = Adam(other, lr=0.5)
    with pytest.raises(ValueError, match=r"parameter 1 \(bias\) has shape \(5,\)") as err:
        fresh.load_state_dict(sd)
    assert "(4,)" in str(err.value)
    assert fresh.lr == 0.5 and all(s == {} for s in fresh.state)  # nothing half-loaded


@pytest.mark.parametrize("edit,match", [
    (lambda sd: sd.update(optimizer="SGD"), "saved by 'SGD'"),
    (lambda sd: sd.update(num_params=2), "for 2 parameters, this optimizer holds 3"),
    (lambda sd: sd.pop("hyper.lr"), "missing hyperparameters"),
    (lambda sd: sd.update({"state.7.exp_avg": np.zeros(3)}), "parameter 7"),
    (lambda sd: sd.update({"bogus": 1}), "unexpected key 'bogus'"),
    (lambda sd: sd.pop("state.0.exp_avg_sq"), "parameter 0 has state"),
    (lambda sd: sd.update({"hyper.beta2": 1.0}), "second beta must be in"),
])
def test_load_state_dict_rejects_what_does_not_fit(edit, match):
    params = make_params()
    opt = Adam(params, lr=0.01)
    run_ours(opt, params, 1)
    sd = opt.state_dict()
    edit(sd)
    fresh = Adam(make_params(), lr=0.5)
    with pytest.raises(ValueError, match=match):
        fresh.load_state_dict(sd)
    assert fresh.lr == 0.5 and fresh.beta2 == 0.999


# ------------------------------------------------------------------------------------------
# zero_grad, frozen parameters, the gradient left alone, bad arguments
# ------------------------------------------------------------------------------------------
def test_zero_grad_zeroes_every_grad_frozen_included():
    params = make_params()
    params[0].trainable = False
    for p in params:
        p.grad[...] = 3.0
    SGD(params, lr=0.1).zero_grad()
    for p in params:
        assert p.grad.shape == p.data.shape and not p.grad.any()


@pytest.mark.parametrize("which", list(OPTIMIZERS))
def test_frozen_parameters_do_not_change(which):
    params = make_params()
    params[0].trainable = False
    params[2].trainable = False
    opt = OPTIMIZERS[which](params)
    out = run_ours(opt, params, 5)
    np.testing.assert_array_equal(out[0], INIT[0])
    np.testing.assert_array_equal(out[2], INIT[2])
    assert not np.array_equal(out[1], INIT[1])
    assert opt.state[0] == {} and opt.state[2] == {}


@pytest.mark.parametrize("which", list(OPTIMIZERS))
def test_step_does_not_modify_the_gradient(which):
    params = make_params()
    opt = OPTIMIZERS[which](params)
    for _ in range(2):  # the second step uses the momentum buffers, made from grad at step 1
        grads = gradients([p.data for p in params])
        for p, g in zip(params, grads):
            p.grad[...] = g
        opt.step()
        for p, g in zip(params, grads):
            np.testing.assert_array_equal(p.grad, g)


def test_step_rejects_a_gradient_of_the_wrong_shape():
    p = Parameter(np.zeros((3, 4)), name="weight")
    p.grad = np.zeros((4, 3))
    with pytest.raises(ShapeError, match=r"parameter 0 \(weight\).*\(3, 4\).*\(4, 3\)"):
        SGD([p], lr=0.1).step()


@pytest.mark.parametrize("make,match", [
    (lambda ps: SGD(ps, lr=-0.1), "lr must be a number >= 0, got -0.1"),
    (lambda ps: SGD(ps, lr=0.1, nesterov=True), "nesterov=True needs momentum > 0"),
    (lambda ps: SGD(ps, lr=0.1, momentum=-0.5), "momentum must be a number >= 0"),
    (lambda ps: SGD(ps, lr=0.1, weight_decay=-1), "weight_decay must be a number >= 0"),
    (lambda ps: SGD(ps, lr="0.1"), "lr must be a number"),
    (lambda ps: Adam(ps, lr=-1.0), "lr must be a number >= 0"),
    (lambda ps: Adam(ps, betas=(0.9, 1.0)), "second beta must be in \\[0, 1\\), got 1.0"),
    (lambda ps: Adam(ps, betas=(-0.1, 0.999)), "first beta must be in"),
    (lambda ps: Adam(ps, betas=(0.9,)), "betas must be a pair"),
    (lambda ps: Adam(ps, eps=-1e-8), "epsilon must be a number >= 0"),
    (lambda ps: Adam(ps, weight_decay=-0.1), "weight_decay must be a number >= 0"),
    (lambda ps: KerasAdam(ps, beta_1=1.5), "first beta must be in"),
    (lambda ps: KerasAdam(ps, epsilon=-1.0), "epsilon must be a number >= 0"),
    (lambda ps: SGD([], lr=0.1), "empty parameter list"),
    (lambda ps: SGD(ps + ps[:1], lr=0.1), "more than once"),
])
def test_bad_arguments_raise_clear_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make(make_params())


def test_something_that_is_not_a_parameter_is_rejected():
    with pytest.raises(TypeError, match="parameter 1 is ndarray, not a minicnn Parameter"):
        SGD([Parameter(np.zeros(2)), np.zeros(2)], lr=0.1)

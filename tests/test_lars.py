"""LARS against a numpy transcription of the official SimCLR update rule."""

import copy
import io

import numpy as np
import pytest
import torch
from torch import nn

from core.simclr.lars import LARS


def reference_step(w, g, v, lr, momentum, wd, eta, nesterov, decay, adapt):
    """One update of google-research/simclr lars_optimizer.py, in numpy float64."""
    if decay:
        g = g + wd * w
    trust = 1.0
    if adapt:
        w_norm = np.sqrt(np.sum(w * w))
        g_norm = np.sqrt(np.sum(g * g))
        if w_norm > 0 and g_norm > 0:
            trust = eta * w_norm / g_norm
    scaled_lr = lr * trust
    v = momentum * v + scaled_lr * g
    update = momentum * v + scaled_lr * g if nesterov else v
    return w - update, v


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 3)
        self.bn = nn.BatchNorm1d(3)
        self.fc2 = nn.Linear(3, 2)
        # All zeros at the start (||w|| = 0) but with a non-zero gradient.
        self.zero_w = nn.Parameter(torch.zeros(2, 2))
        # Gradient always zero; it sits in a group without weight decay, so ||g|| = 0.
        self.still = nn.Parameter(torch.randn(3, 2))
        # Never used: grad stays None.
        self.unused = nn.Parameter(torch.randn(2, 2))

    def forward(self, x):
        y = self.fc2(torch.relu(self.bn(self.fc1(x))))
        return y.pow(2).mean() + (self.zero_w * torch.arange(4.0).view(2, 2)).sum() \
            + 0.0 * self.still.sum()


def make_model():
    torch.manual_seed(0)
    return Net().double()


def param_groups(model):
    main = [p for n, p in model.named_parameters() if n != "still"]
    return [{"params": main}, {"params": [model.still], "weight_decay": 0.0}]


def compute_grads(model, step):
    gen = torch.Generator().manual_seed(100 + step)
    x = torch.randn(8, 4, generator=gen, dtype=torch.float64)
    model.zero_grad(set_to_none=True)
    model(x).backward()


@pytest.mark.parametrize("nesterov", [False, True])
def test_matches_reference(nesterov):
    momentum, wd, eta = 0.9, 0.05, 0.02
    lrs = [0.5, 0.3, 1.0, 0.1, 0.7]
    model = make_model()
    opt = LARS(param_groups(model), lr=lrs[0], momentum=momentum, weight_decay=wd,
               eta=eta, nesterov=nesterov)
    # (decay, adapt) from the default rule: only tensors with ndim >= 2 get either.
    names = [n for n, _ in model.named_parameters() if n != "unused"]
    expected_ndim = {"fc1.weight": 2, "fc1.bias": 1, "bn.weight": 1, "bn.bias": 1,
                     "fc2.weight": 2, "fc2.bias": 1, "zero_w": 2, "still": 2}
    params = dict(model.named_parameters())
    assert {n: params[n].ndim for n in names} == expected_ndim
    ref_w = {n: params[n].detach().numpy().copy() for n in names}
    ref_v = {n: np.zeros_like(ref_w[n]) for n in names}
    unused_before = model.unused.detach().clone()

    for step, lr in enumerate(lrs):
        compute_grads(model, step)
        if step == 0:
            assert not model.zero_w.detach().any()
            assert model.zero_w.grad.abs().sum() > 0
        assert not model.still.grad.any()
        for n in names:
            g = params[n].grad.detach().numpy().copy()
            group_wd = 0.0 if n == "still" else wd
            included = params[n].ndim >= 2
            ref_w[n], ref_v[n] = reference_step(
                ref_w[n], g, ref_v[n], lr, momentum, group_wd, eta, nesterov,
                decay=included, adapt=included)
        for group in opt.param_groups:
            group["lr"] = lr
        opt.step()
        for n in names:
            np.testing.assert_allclose(params[n].detach().numpy(), ref_w[n],
                                       rtol=1e-12, atol=1e-14, err_msg=f"{n} step {step}")
            assert torch.isfinite(params[n]).all()

    assert torch.equal(model.unused, unused_before)
    assert model.unused not in opt.state
    # The zero-norm parameter moved (trust = 1, not 0); the zero-grad one did not.
    assert model.zero_w.detach().abs().sum() > 0
    assert torch.equal(model.still, make_model().still)


def test_zero_norm_first_step_exact():
    # ||w|| = 0: trust = 1, so the first step is plain lr * g even with adaptation on.
    w = nn.Parameter(torch.zeros(2, 2, dtype=torch.float64))
    w.grad = torch.tensor([[1.0, -2.0], [0.5, 3.0]], dtype=torch.float64)
    LARS([w], lr=0.1, eta=0.001).step()
    torch.testing.assert_close(w.detach(), -0.1 * w.grad, rtol=0, atol=1e-15)


def test_group_overrides():
    def one_step(param, **group):
        p = nn.Parameter(param.clone())
        p.grad = torch.tensor([0.6, 0.8], dtype=torch.float64).view_as(p).clone()
        LARS([{"params": [p], **group}], lr=1.0, momentum=0.9, weight_decay=0.5,
             eta=0.1).step()
        return p.detach().flatten().tolist()

    bias = torch.tensor([3.0, 4.0], dtype=torch.float64)  # ||w|| = 5
    # Default: a 1-D parameter gets neither decay nor adaptation: w - lr * g.
    assert one_step(bias) == pytest.approx([2.4, 3.2])
    # lars_adapt=True, no decay: trust = 0.1 * 5 / 1 = 0.5.
    assert one_step(bias, lars_adapt=True) == pytest.approx([2.7, 3.6])
    # apply_weight_decay=True alone: g = [0.6, 0.8] + 0.5 * [3, 4] = [2.1, 2.8].
    assert one_step(bias, apply_weight_decay=True) == pytest.approx([0.9, 1.2])
    # Both, via exclude_1d=False: ||g|| = 3.5, trust = 0.5 / 3.5, update = g / 7.
    assert one_step(bias, exclude_1d=False) == pytest.approx([2.7, 3.6])
    # A 2-D parameter can opt out of adaptation and decay.
    matrix = bias.view(1, 2)
    assert one_step(matrix, lars_adapt=False, apply_weight_decay=False) == \
        pytest.approx([2.4, 3.2])
    # Group weight_decay overrides the default.
    assert one_step(bias, apply_weight_decay=True, weight_decay=0.0) == \
        pytest.approx([2.4, 3.2])


def test_closure_returns_loss():
    model = make_model()
    opt = LARS(model.parameters(), lr=0.1)
    x = torch.randn(8, 4, dtype=torch.float64)

    def closure():
        opt.zero_grad()
        loss = model(x)
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert isinstance(loss, torch.Tensor) and loss.ndim == 0


def test_state_dict_round_trip():
    def run(model, opt, steps):
        for step in steps:
            compute_grads(model, step)
            for group in opt.param_groups:
                group["lr"] = 0.1 * (step + 1)
            opt.step()

    kwargs = dict(lr=0.1, momentum=0.9, weight_decay=0.01, eta=0.02, nesterov=True)
    model = make_model()
    opt = LARS(param_groups(model), **kwargs)
    run(model, opt, range(5))

    first = make_model()
    first_opt = LARS(param_groups(first), **kwargs)
    run(first, first_opt, range(2))
    buf = io.BytesIO()
    torch.save({"model": first.state_dict(), "opt": first_opt.state_dict()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf)

    resumed = make_model()
    resumed.load_state_dict(ckpt["model"])
    resumed_opt = LARS(param_groups(resumed), lr=0.5)  # wrong hyper-parameters
    resumed_opt.load_state_dict(ckpt["opt"])
    assert resumed_opt.param_groups[0]["eta"] == 0.02
    assert resumed_opt.param_groups[1]["weight_decay"] == 0.0
    run(resumed, resumed_opt, range(2, 5))

    for a, b in zip(model.parameters(), resumed.parameters()):
        assert torch.equal(a, b)
    assert copy.deepcopy(opt.state_dict()["param_groups"]) == \
        resumed_opt.state_dict()["param_groups"]


def host_reads(fn) -> tuple[int, set[str]]:
    """How often ``fn()`` read a tensor's value back to the host (``.item()``, ``float(t)``,
    ``if t:`` all go through ``aten::_local_scalar_dense``: a device sync on a GPU), and the
    operators it ran, as the profiler records them."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    names = [e.name for e in prof.events()]
    return names.count("aten::_local_scalar_dense"), set(names)


@pytest.mark.parametrize("nesterov", [False, True])
def test_a_step_never_reads_a_value_back_to_the_host(nesterov):
    """LARS's trust ratio is decided on the device (torch.where), never on the host: a step
    has no host sync. Counted with the profiler on the CPU, and a step on ``meta`` tensors
    (no data at all: .item(), .tolist(), bool(t), .cpu() raise there) must run."""
    assert host_reads(lambda: torch.ones(()).item())[0] == 1  # the count sees a sync when there is one

    model = make_model()
    opt = LARS(param_groups(model), lr=0.5, momentum=0.9, weight_decay=0.05, eta=0.02, nesterov=nesterov)
    for step in range(3):  # the first step creates the momentum buffers; later ones reuse them
        compute_grads(model, step)
        reads, ops = host_reads(opt.step)
        assert reads == 0, f"step {step}: {reads} host reads"
        assert "aten::_foreach_norm" in ops and "aten::where" in ops  # the adaptive path ran

    params = [nn.Parameter(torch.empty(3, 4, device="meta")), nn.Parameter(torch.empty(4, device="meta"))]
    for p in params:
        p.grad = torch.empty_like(p)
    meta_opt = LARS(params, lr=0.5, weight_decay=0.05, nesterov=nesterov)
    meta_opt.step()
    meta_opt.step()
    assert meta_opt.state[params[0]]["momentum_buffer"].device.type == "meta"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA's sync debug mode needs a GPU")
def test_a_cuda_step_does_not_sync():
    model = make_model().cuda()
    opt = LARS(param_groups(model), lr=0.5, weight_decay=0.05, eta=0.02)
    model(torch.randn(8, 4, dtype=torch.float64, device="cuda")).backward()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")  # a sync raises
    try:
        opt.step()
        opt.step()
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("kwargs", [dict(lr=-1.0), dict(lr=0.1, momentum=-0.1),
                                    dict(lr=0.1, weight_decay=-1.0),
                                    dict(lr=0.1, eta=0.0)])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        LARS([nn.Parameter(torch.zeros(2))], **kwargs)


@pytest.mark.parametrize("nesterov", [False, True])
def test_mixed_dtypes_in_one_group_and_grads_left_alone(nesterov):
    # Tensors are updated in buckets by (rule, device, dtype): a group mixing dtypes must give
    # each tensor its own rule's result, and a step never writes into p.grad.
    gen = torch.Generator().manual_seed(0)
    params = [nn.Parameter(torch.randn(3, 4, generator=gen, dtype=dtype)) for dtype in
              (torch.float64, torch.float32, torch.float64)] + [nn.Parameter(torch.randn(4, dtype=torch.float64))]
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen, dtype=p.dtype)
    grads = [p.grad.clone() for p in params]
    start = [p.detach().double().numpy().copy() for p in params]
    LARS(params, lr=0.5, momentum=0.9, weight_decay=0.05, eta=0.02, nesterov=nesterov).step()
    for p, g, w in zip(params, grads, start):
        assert torch.equal(p.grad, g)
        included = p.ndim >= 2
        expected, _ = reference_step(w, g.double().numpy(), np.zeros_like(w), 0.5, 0.9, 0.05, 0.02, nesterov,
                                     decay=included, adapt=included)
        tol = 1e-12 if p.dtype == torch.float64 else 1e-6
        np.testing.assert_allclose(p.detach().double().numpy(), expected, rtol=tol, atol=tol)

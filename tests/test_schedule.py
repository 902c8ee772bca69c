"""Schedules against closed forms written out independently with math.cos."""

import math

import pytest
import torch

from core.simclr.schedule import scale_lr, set_lr, warmup_cosine

BASE, FINAL = 0.8, 0.05


def cosine(t, base=BASE, final=FINAL):
    """Cosine from base (t = 0) to final (t = 1)."""
    return final + (base - final) * (1 + math.cos(math.pi * t)) / 2


def test_warmup_values():
    total, warmup = 110, 10
    lr = lambda s: warmup_cosine(s, total, warmup, BASE, FINAL)  # noqa: E731
    assert lr(0) == pytest.approx(BASE / 10)
    assert lr(4) == pytest.approx(BASE * 5 / 10)
    assert lr(warmup - 1) == pytest.approx(BASE)
    assert lr(warmup) == pytest.approx(BASE)
    # The cosine spans steps 10..110 (100 intervals); it reaches FINAL one past the last step.
    assert lr(11) == pytest.approx(cosine(1 / 100))
    assert lr(10 + 25) == pytest.approx(cosine(1 / 4))
    assert lr(total - 1) == pytest.approx(cosine(99 / 100))
    assert lr(total - 1) > FINAL
    assert lr(total) == FINAL
    assert lr(10 * total) == FINAL


def test_midpoint():
    # 10 warmup steps, cosine over steps 10..30, midpoint at step 20.
    lr = warmup_cosine(20, 30, 10, BASE, FINAL)
    assert lr == pytest.approx((BASE + FINAL) / 2)


def test_no_warmup():
    assert warmup_cosine(0, 5, 0, BASE, FINAL) == pytest.approx(BASE)
    assert warmup_cosine(1, 5, 0, BASE, FINAL) == pytest.approx(cosine(0.2))
    assert warmup_cosine(4, 5, 0, BASE, FINAL) == pytest.approx(cosine(0.8))
    assert warmup_cosine(5, 5, 0, BASE, FINAL) == pytest.approx(FINAL)
    # a one-step run trains at the full learning rate
    assert warmup_cosine(0, 1, 0, BASE, FINAL) == pytest.approx(BASE)
    assert warmup_cosine(1, 1, 0, BASE) == 0.0


def test_warmup_only_and_edge_lengths():
    # warmup_steps == total_steps: warmup reaches base_lr on the last step.
    assert [warmup_cosine(s, 4, 4, 1.0) for s in range(4)] == \
        pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert warmup_cosine(4, 4, 4, 1.0, 0.1) == 0.1
    # warmup_steps == total_steps - 1: the one-step cosine phase starts at base_lr.
    assert [warmup_cosine(s, 3, 2, 1.0, 0.1) for s in range(4)] == \
        pytest.approx([0.5, 1.0, 1.0, 0.1])
    # Step 0 is never exactly zero.
    assert warmup_cosine(0, 10_000, 9_999, 1e-4) > 0


@pytest.mark.parametrize("total,warmup", [(100, 10), (7, 0), (7, 7), (50, 49), (1, 1)])
def test_monotone(total, warmup):
    lrs = [warmup_cosine(s, total, warmup, BASE, FINAL) for s in range(total + 5)]
    assert all(lr > 0 for lr in lrs)
    assert all(a < b for a, b in zip(lrs[:warmup], lrs[1:warmup]))
    assert all(a >= b for a, b in zip(lrs[warmup:], lrs[warmup + 1:]))
    assert max(lrs) == pytest.approx(BASE)


@pytest.mark.parametrize("kwargs", [
    dict(step=-1), dict(total_steps=0), dict(warmup_steps=-1), dict(warmup_steps=11),
    dict(base_lr=0.0), dict(base_lr=-1.0), dict(final_lr=-0.1), dict(final_lr=2.0),
    dict(step=1.5), dict(total_steps=True), dict(base_lr="0.1"),
])
def test_bad_arguments(kwargs):
    args = dict(step=0, total_steps=10, warmup_steps=2, base_lr=1.0, final_lr=0.0)
    args.update(kwargs)
    with pytest.raises(ValueError):
        warmup_cosine(**args)


def test_warmup_error_message_names_values():
    with pytest.raises(ValueError, match=r"warmup_steps \(11\).*total_steps \(10\)"):
        warmup_cosine(0, 10, 11, 1.0)


def test_scale_lr():
    assert scale_lr(0.3, 4096, "linear") == pytest.approx(4.8)
    assert scale_lr(0.3, 256, "linear") == pytest.approx(0.3)
    assert scale_lr(0.075, 4096, "sqrt") == pytest.approx(4.8)
    assert scale_lr(0.5, 100, "sqrt") == pytest.approx(5.0)
    assert scale_lr(0.3, 4096, "none") == 0.3


def test_scale_lr_bad_arguments():
    with pytest.raises(ValueError, match="'linear', 'sqrt', 'none'"):
        scale_lr(0.3, 256, "quadratic")
    with pytest.raises(ValueError):
        scale_lr(0.3, 0, "linear")


def test_set_lr_respects_lr_scale():
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [a]}, {"params": [b], "lr_scale": 0.1}], lr=1.0)
    set_lr(opt, 0.5)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.5, 0.05])

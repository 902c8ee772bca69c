"""Learning-rate schedules as pure functions of the global step.

The trainer computes ``lr = warmup_cosine(step, ...)`` on every iteration and applies it
with ``set_lr``; nothing here keeps state, so resuming from a checkpoint only needs the
step.
"""

import math
from numbers import Integral, Real

SCALING_RULES = ("linear", "sqrt", "none")


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, base_lr: float,
                  final_lr: float = 0.0) -> float:
    """Linear warmup followed by a cosine decay.

    With ``W = warmup_steps`` and ``T = total_steps`` (steps are numbered from 0)::

        step < W:            lr = base_lr * (step + 1) / W
        W <= step < T:       p = (step - W) / (T - W)
                             lr = final_lr + (base_lr - final_lr) * (1 + cos(pi * p)) / 2
        step >= T:           lr = final_lr

    So the first step trains at ``base_lr / W`` (never 0), step ``W - 1`` is the first
    at ``base_lr``, the cosine starts from ``base_lr`` at step ``W`` (``base_lr`` is used
    twice in a row) and reaches ``final_lr`` at step ``T``, one past the last step, as
    in the official SimCLR (``cosine_decay(step - W, T - W)``): every step that trains
    gets a learning rate above ``final_lr``, even a one-step run. ``W = 0`` means no
    warmup; ``W = T`` means warmup only.

    Args:
        step: Global step, starting at 0.
        total_steps: Number of training steps, >= 1.
        warmup_steps: Number of warmup steps, 0 <= warmup_steps <= total_steps.
        base_lr: Peak learning rate, > 0.
        final_lr: Learning rate the cosine reaches at step total_steps, 0 <= final_lr <= base_lr.

    Returns:
        The learning rate for ``step``.

    Raises:
        ValueError: If an argument is out of range.
    """
    _check_int("step", step, 0)
    _check_int("total_steps", total_steps, 1)
    _check_int("warmup_steps", warmup_steps, 0)
    if warmup_steps > total_steps:
        raise ValueError(f"warmup_steps ({warmup_steps}) must not exceed total_steps "
                         f"({total_steps}); lower the warmup or train longer")
    if not (isinstance(base_lr, Real) and base_lr > 0):
        raise ValueError(f"base_lr must be a number > 0, got {base_lr!r}")
    if not (isinstance(final_lr, Real) and 0 <= final_lr <= base_lr):
        raise ValueError(f"final_lr must be a number in [0, base_lr={base_lr}], "
                         f"got {final_lr!r}")

    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if step >= total_steps:
        return float(final_lr)
    progress = (step - warmup_steps) / (total_steps - warmup_steps)
    return final_lr + (base_lr - final_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def scale_lr(base_lr: float, batch_size: int, rule: str) -> float:
    """Scales a base learning rate with the batch size.

    Args:
        base_lr: Learning rate before scaling.
        batch_size: Global batch size (all processes together), >= 1.
        rule: ``"linear"`` (``base_lr * batch_size / 256``), ``"sqrt"``
            (``base_lr * sqrt(batch_size)``, as in the official SimCLR for LARS) or
            ``"none"`` (``base_lr``).

    Returns:
        The scaled learning rate.

    Raises:
        ValueError: If ``batch_size`` < 1 or ``rule`` is unknown.
    """
    _check_int("batch_size", batch_size, 1)
    if rule == "linear":
        return base_lr * batch_size / 256
    if rule == "sqrt":
        return base_lr * math.sqrt(batch_size)
    if rule == "none":
        return float(base_lr)
    raise ValueError(f"unknown lr scaling rule {rule!r}; choose one of "
                     f"{', '.join(repr(r) for r in SCALING_RULES)}")


def set_lr(optimizer, lr: float) -> None:
    """Sets the learning rate of every param group of ``optimizer``.

    A group's optional ``lr_scale`` key (default 1) multiplies ``lr`` for that group.

    Args:
        optimizer: A ``torch.optim.Optimizer``.
        lr: Learning rate to set.
    """
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)

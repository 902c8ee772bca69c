"""LARS optimizer with the update rule of the official SimCLR implementation.

Reference: You et al., "Large Batch Training of Convolutional Networks" (2017), as
used in google-research/simclr (``lars_optimizer.py``, classic momentum).
"""

import torch


class LARS(torch.optim.Optimizer):
    """Layer-wise Adaptive Rate Scaling with momentum.

    For each parameter ``w`` with gradient ``g``, one step does::

        g = g + weight_decay * w                      # if weight decay applies to w
        trust = eta * ||w|| / ||g||                   # if adaptation applies to w,
                                                      # 1 where ||w|| = 0 or ||g|| = 0
        v = momentum * v + lr * trust * g             # buffer starts at zero
        w = w - (momentum * v + lr * trust * g if nesterov else v)

    The learning rate lives inside the momentum buffer, as in the official code, so
    changing ``lr`` between steps does not rescale the accumulated velocity.

    By default parameters with ``ndim <= 1`` (biases, norm weights) get neither weight
    decay nor adaptation. Besides the constructor arguments, a param group may set:

    - ``lars_adapt`` (bool): force adaptation on or off for the group's parameters.
    - ``apply_weight_decay`` (bool): force weight decay on or off for them.

    Both default to ``None``, meaning "follow ``exclude_1d``". Parameters whose
    ``grad`` is ``None`` are skipped. The step never syncs with the host.

    Args:
        params: Parameters or param group dicts.
        lr: Learning rate.
        momentum: Momentum factor.
        weight_decay: L2 penalty added to the gradient before the trust ratio.
        eta: Trust coefficient.
        nesterov: Use Nesterov momentum.
        exclude_1d: Exclude parameters with ``ndim <= 1`` from weight decay and
            adaptation unless their group says otherwise.
    """

    def __init__(self, params, lr: float, momentum: float = 0.9,
                 weight_decay: float = 1e-6, eta: float = 0.001,
                 nesterov: bool = False, exclude_1d: bool = True):
        if lr < 0.0:
            raise ValueError(f"lr must be >= 0, got {lr}")
        if momentum < 0.0:
            raise ValueError(f"momentum must be >= 0, got {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        if eta <= 0.0:
            raise ValueError(f"eta must be > 0, got {eta}")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta,
                        nesterov=nesterov, exclude_1d=exclude_1d,
                        lars_adapt=None, apply_weight_decay=None)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        """Performs one optimization step; ``closure`` re-evaluates and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            # Tensors that share a rule, a device and a dtype are updated together by
            # multi-tensor (foreach) ops: a dozen ops per bucket instead of about ten per tensor.
            buckets: dict[tuple, list[torch.Tensor]] = {}
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("LARS does not support sparse gradients")
                included = not (group["exclude_1d"] and p.ndim <= 1)
                adapt = included if group["lars_adapt"] is None else group["lars_adapt"]
                decay = (included if group["apply_weight_decay"] is None
                         else group["apply_weight_decay"])
                buckets.setdefault((adapt, decay, p.device, p.dtype), []).append(p)
            for (adapt, decay, _, _), params in buckets.items():
                self._update(params, group, adapt, decay)
        return loss

    def _update(self, params: list[torch.Tensor], group: dict, adapt: bool, decay: bool) -> None:
        """One step of the rule above for tensors on one device, with one dtype."""
        lr, momentum = group["lr"], group["momentum"]
        grads = [p.grad for p in params]
        # scaled: the step before momentum; one new tensor per parameter, updated in place
        scaled = torch._foreach_add(grads, params, alpha=group["weight_decay"]) if decay else None
        if adapt:
            w_norm = torch.stack(torch._foreach_norm(params))
            g_norm = torch.stack(torch._foreach_norm(grads if scaled is None else scaled))
            # torch.where instead of an `if` on the norms: no host sync.
            trust = torch.where((w_norm > 0) & (g_norm > 0), group["eta"] * w_norm / g_norm, 1.0)
            factor: list[torch.Tensor] | float = list((trust * lr).unbind())
        else:
            factor = lr
        if scaled is None:
            scaled = torch._foreach_mul(grads, factor)
        else:
            torch._foreach_mul_(scaled, factor)
        velocity = []
        for p in params:
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(p)
            velocity.append(state["momentum_buffer"])
        torch._foreach_mul_(velocity, momentum)
        torch._foreach_add_(velocity, scaled)
        if group["nesterov"]:
            torch._foreach_add_(scaled, torch._foreach_mul(velocity, momentum))
            torch._foreach_sub_(params, scaled)
        else:
            torch._foreach_sub_(params, velocity)

"""NT-Xent, the normalised temperature-scaled cross-entropy loss of SimCLR."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.simclr import dist
class NTXentLoss(nn.Module):
    """NT-Xent loss (Chen et al., 2020, Algorithm 1).

    Row k of ``z_i`` and row k of ``z_j`` are two views of the same image. The 2N
    rows form the anchors; each anchor's positive is its partner and its negatives
    are the other 2N - 2 rows (itself excluded). With s the cosine similarity:

        l(a, p) = -log( exp(s_ap / tau) / sum_{k != a} exp(s_ak / tau) )
        L = 1 / (2N) * sum over the 2N anchors a of l(a, partner(a))

    The batch size is read from the input, so any N >= 1 works. The loss is
    computed in at least float32 (float64 input stays float64) with autocast
    disabled, through a log-sum-exp, so it is stable for small temperatures.

    Inside an initialised torch.distributed group, both batches are gathered from
    every rank (with gradients, see ``core.simclr.dist.gather_with_grad``) so negatives
    span the global batch of 2 * world_size * N rows. Each rank averages over its
    own 2N anchors: the mean of the ranks' losses equals the one-process loss on
    the concatenated batch, and with DDP's gradient averaging so do the parameter
    gradients. Every rank must then call the loss with the same N.

    Args:
        temperature: tau > 0; smaller values sharpen the softmax.
    """

    def __init__(self, temperature: float = 0.5) -> None:
        super().__init__()
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be a positive number, got {temperature!r}")
        self.temperature = float(temperature)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"

    def forward(self, z_i: Tensor, z_j: Tensor) -> Tensor:
        """Computes the loss for one batch of positive pairs.

        Args:
            z_i: Projections of the first views. Shape: (N, D).
            z_j: Projections of the second views. Shape: (N, D).

        Returns:
            The scalar loss, of dtype max(input dtype, float32).
        """
        if z_i.dim() != 2 or z_i.shape != z_j.shape:
            raise ValueError(
                "z_i and z_j must both have shape (N, D) with the same N and D, "
                f"got {tuple(z_i.shape)} and {tuple(z_j.shape)}"
            )
        if z_i.shape[0] == 0:
            raise ValueError("NT-Xent needs at least one pair (N >= 1), got N = 0")

        dtype = torch.promote_types(z_i.dtype, torch.float32)
        # Under autocast the matmul below would run in half precision; the logits
        # reach 1/tau, where bf16 rounding alone is larger than useful differences.
        with torch.autocast(device_type=z_i.device.type, enabled=False):
            z_i = F.normalize(z_i.to(dtype), dim=1)
            z_j = F.normalize(z_j.to(dtype), dim=1)
            n = z_i.shape[0]

            # Candidates: [all ranks' z_i ; all ranks' z_j], shape (2WN, D).
            all_i = dist.gather_with_grad(z_i)
            all_j = dist.gather_with_grad(z_j)
            total = all_i.shape[0]  # W * N
            candidates = torch.cat([all_i, all_j], dim=0)

            # Local anchors, shape (2N, D), and their rows among the candidates.
            anchors = torch.cat([z_i, z_j], dim=0)
            local = torch.arange(n, device=z_i.device) + dist.get_rank() * n
            self_idx = torch.cat([local, local + total])
            pos_idx = torch.cat([local + total, local])

            logits = anchors @ candidates.T / self.temperature  # (2N, 2WN)
            is_self = torch.zeros_like(logits, dtype=torch.bool)
            is_self[torch.arange(2 * n, device=z_i.device), self_idx] = True
            logits = logits.masked_fill(is_self, float("-inf"))
            return F.cross_entropy(logits, pos_idx)

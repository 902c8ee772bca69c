"""Run health: is a pretraining run learning, collapsed or diverged? Statistics of the
projections the loop already computed, and one verdict per run, recomputed at each epoch end.

Cost: no extra forward pass. The loop hands :meth:`Health.step` the projections ``z`` of
every step; only the last :data:`SAMPLE_STEPS` steps of each epoch are kept, detached, as
running sums on the device (a few vector ops and one ``pdist`` of at most
:data:`UNIFORMITY_ROWS` rows per view per step), and they are read back (the only host
syncs) once per epoch. The epoch's mean loss comes from the loss values the loop already has.
Rank 0 measures its own share of the batch; the decision to stop is broadcast from it.

Per epoch, through the run's metric writer (metrics.jsonl and TensorBoard, ``health/``):

- ``health/std``: the std of each dimension of the L2-normalised projections, averaged over
  the d dimensions, times sqrt(d). Normalised so that healthy ~ 1 (directions spread
  uniformly over the sphere have std 1/sqrt(d) per dimension) and collapse -> 0.
- ``health/alignment``: Wang & Isola (2020) alignment, mean ||z1 - z2||^2 over the positive
  pairs (normalised z, alpha = 2): 0 when both views map to the same point, at most 4.
- ``health/uniformity``: Wang & Isola uniformity, log mean exp(-2 ||zi - zj||^2) over the
  distinct pairs within a view of the batch (t = 2), averaged over the two views and the
  sampled steps: 0 when collapsed, about -4 + 8/d for uniform directions in d dimensions.
- ``health/loss_vs_chance``: the epoch's mean NT-Xent loss / ln(2N - 1), N the batch in pairs
  as the loss sees it (global across ranks): 1 is the loss of uniform similarities.

The verdict (status.json ``health`` and ``health_reason``, docs/RUN_DIRECTORY.md "Health"),
first rule that holds:

- ``diverged``: the loss became NaN/inf and the run fails (``--nan-policy stop``).
- ``collapsed``: ``health/std`` < :data:`STD_COLLAPSED` (0.1).
- ``not learning``: after warmup and at least :data:`MIN_EPOCHS` (2) epochs, one of them after
  the reference epoch (the first), ``health/loss_vs_chance`` >= :data:`CHANCE_RATIO` (0.99), or
  the epoch mean loss is not :data:`LOSS_FLAT` (1%) below the reference epoch's (a loss that
  rises counts too) while the steps are steady enough to show such a fall: 1% of the reference
  is at least :data:`FLAT_SIGMAS` (2) standard errors of the difference of the two means.
- ``ok`` otherwise, and until there is evidence (before the first epoch ends).

Thresholds measured with ``simclr pretrain --preset tiny --knn-k 10 --epochs E --seed S
[--lr 1e-12] [--subset 1024]`` (synthetic, 8 steps an epoch, or 32 with --subset 1024; CPU;
docs/RUN_DIRECTORY.md "Health" has the table). Healthy: std 0.73-0.88, loss/chance at epoch 2
0.904-0.975 (9 runs); at --lr 1e-12 std stays 0.74-0.79, and a constant projection has std 0:
0.1 is far from both. Untrained (--lr 1e-12): loss/chance at epoch 2 0.985-1.000, 4 of 5 seeds
>= 0.99 (the fifth, 0.985, drifted down to 0.974 at epoch 3 by noise alone). With 8 steps an epoch the epoch
means are noisy: untrained runs' epoch-mean loss fell by -0.9% to +2.1% from epoch 1's, while
the default 2-epoch tiny run falls only 0.8-2.6% by epoch 2, so a bare 1% rule called a healthy
run "not learning"; two standard errors of the difference are 0.9-2.0% there, and the noise
gate keeps the loss rule for epochs long enough to tell (32 steps: 2 SE 0.6%; the untrained
run's loss fell -0.1%, the healthy one's 5.5%).

The reference loss and the last verdict are kept in the checkpoint (``Progress.extra``), so a
resumed run compares with its own first epoch and stops (``--on-unhealthy stop``) only when
the verdict turns bad anew. Checkpoints without them take the first epoch after the resume as
the reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from core.simclr import dist

if TYPE_CHECKING:
    from core.training.session import Progress, Session

#: collapsed below this ``health/std`` (healthy ~ 1; measured: healthy and untrained tiny runs 0.73-0.88)
STD_COLLAPSED = 0.1
#: not learning: the epoch mean loss has not fallen this fraction below the reference epoch's
LOSS_FLAT = 0.01
#: not learning: the epoch mean loss at least this fraction of chance, ln(2N - 1)
CHANCE_RATIO = 0.99
#: ... when the steps' noise lets a fall of LOSS_FLAT show: it is this many standard errors or more
FLAT_SIGMAS = 2.0
#: not learning is judged from this many completed epochs on (and after warmup)
MIN_EPOCHS = 2
#: the projections of the last this-many steps of each epoch are measured
SAMPLE_STEPS = 8
#: uniformity's pairwise distances use at most this many rows of each view
UNIFORMITY_ROWS = 512

BAD = ("collapsed", "not learning", "diverged")


# ---------------------------------------------------------------------- statistics
def normalised_std(z: Tensor) -> float:
    """``health/std`` of projections ``z``, shape (M, d): the mean over the d dimensions of each
    dimension's (population) std of the L2-normalised rows, times sqrt(d); ~1 healthy, 0 collapsed."""
    zn = F.normalize(z.detach().double(), dim=1)
    return float(zn.std(dim=0, correction=0).mean() * math.sqrt(z.shape[1]))


def alignment(z1: Tensor, z2: Tensor) -> float:
    """Wang & Isola alignment (alpha = 2) of positive pairs, rows of z1 and z2 (N, d): mean ||z1n - z2n||^2."""
    return float((F.normalize(z1.detach().float(), dim=1) - F.normalize(z2.detach().float(), dim=1))
                 .pow(2).sum(1).mean())


def uniformity(z: Tensor, t: float = 2.0) -> float:
    """Wang & Isola uniformity of rows z (N, d), N >= 2: log mean exp(-t ||zin - zjn||^2) over pairs i < j."""
    return float(_uniformity(F.normalize(z.detach().float(), dim=1), t))


def _uniformity(zn: Tensor, t: float = 2.0) -> Tensor:
    return torch.pdist(zn[:UNIFORMITY_ROWS]).pow(2).mul(-t).exp().mean().log()


def chance_loss(pairs: int) -> float:
    """NT-Xent when every similarity is the same: each anchor picks its partner among 2N - 1 rows."""
    return math.log(2 * pairs - 1)


# ---------------------------------------------------------------------- the verdict
@dataclass(frozen=True)
class Verdict:
    """``word``: ok, collapsed, not learning or diverged; ``reason``: one line that says why."""

    word: str
    reason: str

    @property
    def bad(self) -> bool:
        return self.word in BAD


def judge(epoch: int, std: float, loss: float, vs_chance: float, first_loss: float | None = None,
          first_epoch: int = 1, warmup_epochs: float = 0.0, noise: float = 0.0) -> Verdict:
    """The verdict at the end of ``epoch`` (completed epochs) from its statistics: ``std``
    (health/std), its mean ``loss`` and ``vs_chance``, and the reference epoch's mean loss
    ``first_loss`` (``first_epoch``), and ``noise``, the standard error of the difference of the
    two means (the loss rule holds only when a fall of :data:`LOSS_FLAT` is at least
    :data:`FLAT_SIGMAS` of it); not learning only once warmup is over, at least
    :data:`MIN_EPOCHS` epochs are done and one of them after the reference."""
    if std < STD_COLLAPSED:
        return Verdict("collapsed", f"collapsed: projection std {std:.3g} of healthy 1 (below {STD_COLLAPSED:g}) "
                                    f"at epoch {epoch}")
    if epoch >= max(MIN_EPOCHS, math.ceil(warmup_epochs), first_epoch + 1):
        if vs_chance >= CHANCE_RATIO:
            return Verdict("not learning", f"not learning: loss {loss:.4g} is {vs_chance:.3f} of chance "
                                           f"({CHANCE_RATIO:g} or more) at epoch {epoch}")
        if first_loss is not None and loss > (1 - LOSS_FLAT) * first_loss and \
                FLAT_SIGMAS * noise <= LOSS_FLAT * first_loss:
            return Verdict("not learning", f"not learning: epoch mean loss {loss:.4g} is not {LOSS_FLAT:.0%} below "
                                           f"epoch {first_epoch}'s {first_loss:.4g} ({loss / first_loss - 1:+.1%}) "
                                           f"at epoch {epoch}")
    return Verdict("ok", f"ok: projection std {std:.2f} of healthy 1, loss {vs_chance:.2f} of chance at epoch {epoch}")


# ---------------------------------------------------------------------- in the loop
class Health:
    """Run health in the loop: :meth:`step` every step, :meth:`epoch_end` at each epoch end
    (logs health/*, writes the verdict, returns whether to stop), :meth:`diverged` before a NaN fails it."""

    def __init__(self, s: Session) -> None:
        self.cfg, self.log, self.spe = s.cfg, s.log, s.steps_per_epoch
        self.on = s.log.enabled  # rank 0 measures; the others only hear its decision to stop
        self.kept = s.progress.extra.setdefault("health", {})  # saved in every checkpoint
        self._reset()
        self.log.update(health=self.kept.get("word", "ok"),
                        health_reason=self.kept.get("reason", "ok: no epoch finished yet"))

    def _reset(self) -> None:
        self.loss_sum, self.loss_sq, self.losses, self.rows = 0.0, 0.0, 0, 0
        self.sums: list[Tensor] = []  # [sum zn, sum zn^2, sum ||z1n - z2n||^2, sum uniformity], on the device
        self.pairs = self.sampled = 0

    def step(self, z: Tensor, loss: float, step: int) -> None:
        """One finished step: ``z`` (N, 2, d) the projections of both views, ``loss`` its loss
        (a non-finite one is left out), ``step`` the global step it was (before counting it)."""
        if not self.on or not math.isfinite(loss):
            return
        self.loss_sum, self.loss_sq, self.losses = self.loss_sum + loss, self.loss_sq + loss * loss, self.losses + 1
        self.pairs = z.shape[0] * dist.get_world_size()  # the loss gathers every rank's pairs
        if step % self.spe < self.spe - SAMPLE_STEPS:
            return
        zn = F.normalize(z.detach().float(), dim=2)
        flat = zn.flatten(0, 1).double()
        now = [flat.sum(0), flat.pow(2).sum(0), (zn[:, 0] - zn[:, 1]).pow(2).sum(),
               (_uniformity(zn[:, 0]) + _uniformity(zn[:, 1])) / 2]
        self.sums = now if not self.sums else [a + b for a, b in zip(self.sums, now)]
        self.rows, self.sampled = self.rows + flat.shape[0], self.sampled + 1

    def epoch_end(self, prog: Progress) -> bool:
        """The epoch ``prog.epoch`` is done: log health/*, write the verdict to status.json (and
        say it when it turns bad). True when every rank must stop now (``--on-unhealthy stop``)."""
        turned_bad = False
        if self.on and self.sampled and self.losses:
            verdict = self._measure(prog)
            turned_bad = verdict.bad and self.kept.get("word", "ok") not in BAD
            self.kept.update(word=verdict.word, reason=verdict.reason)
            self.log.update(health=verdict.word, health_reason=verdict.reason)
            if turned_bad and self.cfg.on_unhealthy == "warn":
                self.log.say(f"{verdict.reason} (--on-unhealthy warn: training goes on)")
            elif turned_bad:
                self.log.update(note=verdict.reason)
                self.log.say(f"{verdict.reason} (--on-unhealthy stop: checkpointing and stopping)")
        self._reset()
        return agreed(turned_bad and self.cfg.on_unhealthy == "stop")

    def _measure(self, prog: Progress) -> Verdict:
        zsum, sqsum, align, unif = (t.item() if t.dim() == 0 else t for t in self.sums)
        mean = zsum / self.rows
        std = float((sqsum / self.rows - mean.pow(2)).clamp_min(0).sqrt().mean() * math.sqrt(mean.numel()))
        loss = self.loss_sum / self.losses
        var = max(self.loss_sq - self.losses * loss * loss, 0.0) / max(self.losses - 1, 1)
        se = math.sqrt(var / self.losses) if self.losses > 1 else math.inf  # of the epoch's mean loss
        vs_chance = loss / chance_loss(self.pairs)
        if "first_loss" not in self.kept:
            self.kept.update(first_loss=loss, first_epoch=prog.epoch, first_se=se)
        values = {"std": std, "alignment": align * 2 / self.rows, "uniformity": unif / self.sampled,
                  "loss_vs_chance": vs_chance}
        for name, value in values.items():
            self.log.metric(f"health/{name}", value, prog.step, float(prog.epoch))
        return judge(prog.epoch, std, loss, vs_chance, self.kept["first_loss"], self.kept["first_epoch"],
                     self.cfg.warmup_epochs, math.hypot(se, self.kept.get("first_se", math.inf)))

    def diverged(self, value: float, step: int) -> None:
        """The loss became ``value`` (NaN/inf) at ``step`` and the run is about to fail."""
        reason = f"diverged: loss became {value} at step {step}"
        self.kept.update(word="diverged", reason=reason)
        self.log.update(health="diverged", health_reason=reason)


def agreed(flag: bool) -> bool:
    """Rank 0's ``flag`` on every rank (it alone measures), so all ranks stop at the same epoch."""
    if not dist.is_dist():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device="cuda" if torch.distributed.get_backend() == "nccl" else "cpu")
    torch.distributed.broadcast(t, src=0)
    return bool(t.item())

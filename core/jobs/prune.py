"""Stopping a sweep's hopeless members early: the rungs, the two rules, the decision log.

A sweep made with ``--prune asha|median`` judges each member at its rungs: the epochs
R, R·η, R·η², ... below its last epoch (R = ``--min-epochs``, η = ``--reduction-factor``).
The member itself asks, at the end of a rung epoch, after its kNN monitor and before it
saves; so the decision is the same under the local queue and Slurm, and is taken by no
worker.

**Seeds are judged together.** A setting (the swept values without the seed) is judged by
the mean of its seeds' metric at the rung, over the seeds that have reached it so far: a
member's decision uses its own value and its siblings' values at that rung. A lucky or an
unlucky seed moves its setting's mean; it neither saves nor sinks the setting alone, except
for the first seed of each setting to arrive, which is all the setting has yet.

**The rules** (the metric's direction: kNN top-1 higher is better, loss lower):

* ``asha`` — asynchronous successive halving (Li et al., 2020), its stopping form: at rung
  k a setting goes on if it is among the best ⌊n/η⌋ of the n settings that have reached
  rung k (at least the best one); otherwise the member is pruned. Nobody waits: a setting
  that arrives first is compared with what has arrived.
* ``median`` — the median stopping rule (Golovin et al., Vizier, 2017): at a rung a setting
  is pruned if its mean is worse than the median of the means, at the same rung, of the
  settings that have completed (a member finished); with none completed yet it goes on.

Each decision is one line of the sweep's ``decisions.jsonl`` (rung, epoch, member, setting,
its value and its setting's mean, the cutoff, the settings compared and their means), taken
under the sweep folder's lock and never taken twice: a member that asks again about a rung
(a resume after a kill, a requeued Slurm job) gets the decision already written. Optuna's
pruners are not used: they judge one trial by its own reports, record a rung once per
trial (so a setting could not be judged again when its next seed arrives) and return a
bare bool, where the log must say the cutoff and what was compared. For one seed the two
rules here agree with Optuna's SuccessiveHalvingPruner and MedianPruner (tests/test_prune.py).

Torch-free; the runner calls :class:`Pruner`.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from core.errors import ConfigError
from core.runs import folder_lock, read_json, read_metrics, read_status, read_sweep
from core.jobs.plan import members, sweep_dir

RULES = ("asha", "median")
#: --prune-metric -> (the metrics.jsonl tag it is read from, whether higher is better)
METRICS = {"knn_top1": ("knn/top1", True), "loss": ("train/loss", False)}
LOG = "decisions.jsonl"


@dataclass(frozen=True)
class PruneSpec:
    """How a sweep prunes: ``--prune RULE --prune-metric M --min-epochs R --reduction-factor η``."""

    rule: str
    metric: str = "knn_top1"
    min_epochs: int = 1
    reduction_factor: int = 3

    def check(self) -> "PruneSpec":
        if self.rule not in RULES:
            raise ConfigError(f"--prune {self.rule!r}: choose asha or median")
        if self.metric not in METRICS:
            raise ConfigError(f"--prune-metric {self.metric!r}: choose {' or '.join(METRICS)}")
        if self.min_epochs < 1:
            raise ConfigError(f"--min-epochs must be at least 1 (got {self.min_epochs})")
        if self.reduction_factor < 2:
            raise ConfigError(f"--reduction-factor must be at least 2 (got {self.reduction_factor})")
        return self

    def rungs(self, epochs: int) -> list[int]:
        """The rung epochs before the last epoch: R, R·η, R·η², ... (< ``epochs``)."""
        out, r = [], self.min_epochs
        while r < epochs:
            out.append(r)
            r *= self.reduction_factor
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "PruneSpec | None":
        if not isinstance(d, dict) or d.get("rule") not in RULES:
            return None
        return cls(d["rule"], d.get("metric", "knn_top1"), int(d.get("min_epochs", 1)),
                   int(d.get("reduction_factor", 3)))


#: the pruning flags' defaults (``simclr sweep --prune-metric ... --min-epochs ... --reduction-factor ...``)
DEFAULTS = {"metric": "knn_top1", "min_epochs": 1, "reduction_factor": 3}
FLAGS = {"metric": "--prune-metric", "min_epochs": "--min-epochs", "reduction_factor": "--reduction-factor"}


def spec_of(rule: str | None, metric: str = "knn_top1", min_epochs: int = 1, reduction_factor: int = 3) -> PruneSpec | None:
    """The sweep's pruning from its flags (CLI and TUI): checked, or None without a rule; the
    other flags set without a rule are refused. Raises ConfigError."""
    if not rule:
        given = {"metric": metric, "min_epochs": min_epochs, "reduction_factor": reduction_factor}
        changed = [FLAGS[k] for k, v in given.items() if v != DEFAULTS[k]]
        if changed:
            raise ConfigError(f"{changed[0]} sets how a sweep prunes; add --prune asha or --prune median")
        return None
    return PruneSpec(rule, metric, min_epochs, reduction_factor).check()


def check_rungs(spec: PruneSpec, epochs: int) -> None:
    """Pruning needs a rung before the members' last epoch."""
    if not spec.rungs(epochs):
        raise ConfigError(f"--min-epochs {spec.min_epochs} leaves no rung before the last epoch ({epochs}): "
                          f"give a smaller --min-epochs or more --epochs after --")


@dataclass(frozen=True)
class Decision:
    """One line of decisions.jsonl."""

    rung: int
    epoch: int
    member: str
    setting: str
    seed: int | None
    value: float
    setting_value: float
    seeds_in_mean: int
    rule: str
    metric: str
    cutoff: float | None
    compared: dict[str, float]
    prune: bool
    reason: str
    time: float

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Decision | None":
        try:
            return cls(**{k: d[k] for k in cls.__dataclass_fields__})
        except (KeyError, TypeError):
            return None


# ---------------------------------------------------------------------- the rules
def _better(higher: bool):
    return (lambda a, b: a > b) if higher else (lambda a, b: a < b)


def _finite(values) -> list[float]:
    return [v for v in values if v is not None and math.isfinite(v)]


def asha(own: float, others: dict[str, float], eta: int, higher: bool) -> tuple[bool, float | None]:
    """(prune?, cutoff): ``own`` goes on if among the best ⌊n/η⌋ (at least one) of the n
    values (``others`` and ``own``); the cutoff is the worst value that still goes on. A
    value that is not a finite number counts among the n as the worst (and is pruned)."""
    values = sorted(_finite([*others.values(), own]), reverse=higher)
    keep = max(1, (len(others) + 1) // eta)
    cutoff = values[keep - 1] if len(values) >= keep else None
    if own is None or not math.isfinite(own):
        return True, cutoff
    return cutoff is not None and _better(higher)(cutoff, own), cutoff


def median(own: float, completed: dict[str, float], higher: bool) -> tuple[bool, float | None]:
    """(prune?, cutoff): ``own`` is pruned if worse than the median of the completed settings'
    values at the same rung; with none completed nothing is pruned."""
    if own is None or not math.isfinite(own):
        return True, None
    values = _finite(completed.values())
    if not values:
        return False, None
    cutoff = statistics.median(values)
    return _better(higher)(cutoff, own), cutoff


# ---------------------------------------------------------------------- the log
def read_log(sweep_dir: Path) -> list[Decision]:
    """Every decision of a sweep, in the order taken; a damaged line is skipped."""
    out = []
    try:
        lines = (Path(sweep_dir) / LOG).read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            d = Decision.from_dict(json.loads(line))
        except ValueError:
            continue
        if d is not None:
            out.append(d)
    return out


def released(sweep_dir: Path, member: str) -> bool:
    """Whether a person resumed ``member`` after its sweep pruned it: its pruning is off for good."""
    try:
        lines = (Path(sweep_dir) / LOG).read_text().splitlines()
    except OSError:
        return False
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and rec.get("released") is True and rec.get("member") == member:
            return True
    return False


def release(run_dir: Path, why: str) -> None:
    """Turn pruning off for a pruned member a person resumes (``simclr pretrain --resume``, the
    TUI's resume, a resume submitted to Slurm): one line ``{"member", "released": true, "why",
    "time"}`` in its sweep's log, which every later start of the member reads."""
    rec = read_sweep(Path(run_dir))
    if rec is None or read_status(Path(run_dir) / "status.json") is None:
        return
    folder = sweep_dir(Path(run_dir).parent, rec["sweep"])
    if not folder.is_dir():
        return
    with folder_lock(folder / LOG):
        if not released(folder, Path(run_dir).name):
            _write(folder, {"member": Path(run_dir).name, "released": True, "why": why, "time": time.time()})


def _append(sweep_dir: Path, d: Decision) -> None:
    _write(sweep_dir, asdict(d))


def _write(sweep_dir: Path, record: dict[str, Any]) -> None:
    """One line of the log; a value that is not a finite number is written as null (valid JSON)."""
    def finite(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: finite(x) for k, x in v.items()}
        return None if isinstance(v, float) and not math.isfinite(v) else v
    clean = finite(record)
    with open(Path(sweep_dir) / LOG, "a") as f:
        f.write(json.dumps(clean, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def setting_of(swept: dict[str, Any]) -> str:
    """A member's setting: its swept values without the seed."""
    return ",".join(f"{k}={v}" for k, v in swept.items() if k != "seed") or "(base)"


def completed_settings(runs_dir: Path, sweep: str) -> set[str]:
    """Settings with a finished member."""
    return {setting_of(rec["swept"]) for run, rec in members(runs_dir, sweep) if run.state == "finished"}


class Pruner:
    """A sweep member's side of pruning: which epochs are rungs, and the decision at each.

    ``Pruner.of(run_dir)``: None when the run is no pruned sweep's member.
    """

    def __init__(self, run_dir: Path, sweep: str, swept: dict[str, Any], spec: PruneSpec, epochs: int) -> None:
        self.run_dir, self.sweep, self.spec = Path(run_dir), sweep, spec
        self.member, self.setting = self.run_dir.name, setting_of(swept)
        self.seed = swept.get("seed") if isinstance(swept.get("seed"), int) else None
        self.rungs = spec.rungs(epochs)
        self.dir = sweep_dir(self.run_dir.parent, sweep)
        self.tag, self.higher = METRICS[spec.metric]

    @classmethod
    def of(cls, run_dir: Path, epochs: int) -> "Pruner | None":
        rec = read_sweep(run_dir)
        plan = read_json(sweep_dir(Path(run_dir).parent, rec["sweep"]) / "sweep.json") if rec else None
        spec = PruneSpec.from_dict((plan or {}).get("prune"))
        if spec is None or released(sweep_dir(Path(run_dir).parent, rec["sweep"]), Path(run_dir).name):
            return None
        return cls(run_dir, rec["sweep"], rec["swept"], spec, epochs)

    def is_rung(self, epoch: int) -> bool:
        return epoch in self.rungs

    def earlier(self, epoch: int) -> Decision | None:
        """This member's prune decision at a rung at or before ``epoch`` (a resume after it)."""
        return next((d for d in read_log(self.dir) if d.member == self.member and d.setting == self.setting
                     and d.prune and d.epoch <= epoch), None)

    def value(self, step: int, steps_per_epoch: int, knn: float | None) -> float:
        """The metric at this rung: the kNN monitor's top-1, or the mean loss of the epoch's steps
        (read back from metrics.jsonl, so the log agrees with the recorded metrics)."""
        if self.spec.metric == "knn_top1":
            if knn is None:
                raise ConfigError("--prune-metric knn_top1 needs the kNN monitor: labelled train/ and test/ "
                                  "class folders; use --prune-metric loss for unlabelled data")
            return float(knn)
        records, _ = read_metrics(self.run_dir / "metrics.jsonl")
        losses = [r["value"] for r in records if r["tag"] == self.tag and step - steps_per_epoch < r.get("step", -1) <= step
                  and math.isfinite(r["value"])]  # a step skipped for a NaN loss (--nan-policy skip) does not count
        return float(sum(losses) / len(losses)) if losses else float("nan")

    def decide(self, epoch: int, value: float) -> Decision:
        """This member's decision at rung ``epoch`` (taken now, or the one already in the log)."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with folder_lock(self.dir / LOG):
            log = read_log(self.dir)
            for d in log:
                if d.member == self.member and d.setting == self.setting and d.epoch == epoch:
                    return d
            rung = self.rungs.index(epoch)
            at_rung: dict[str, dict[str, float]] = {}
            for d in log:
                if d.epoch == epoch:
                    at_rung.setdefault(d.setting, {})[d.member] = d.value
            at_rung.setdefault(self.setting, {})[self.member] = value
            means = {s: _mean(v.values()) for s, v in at_rung.items()}  # nan when a seed's value is not a number
            own, seeds = means.pop(self.setting), len(at_rung[self.setting])
            if self.spec.rule == "asha":
                prune, cutoff = asha(own, means, self.spec.reduction_factor, self.higher)
                compared = means
                why = (f"among the best {max(1, (len(means) + 1) // self.spec.reduction_factor)} of "
                       f"{len(means) + 1} settings at epoch {epoch}")
            else:
                done = completed_settings(self.run_dir.parent, self.sweep) - {self.setting}
                compared = {s: m for s, m in means.items() if s in done}
                prune, cutoff = median(own, compared, self.higher)
                why = (f"the median of {len(compared)} completed setting(s) at epoch {epoch}" if compared
                       else f"no completed setting to compare with at epoch {epoch}")
            word = "worse than" if prune else "not worse than" if cutoff is not None else "kept:"
            reason = (f"{self.spec.metric} {own:.4f} (mean of {seeds} seed(s)) {word} "
                      + (f"{cutoff:.4f}, " if cutoff is not None else "") + why)
            d = Decision(rung, epoch, self.member, self.setting, self.seed, value, own, seeds, self.spec.rule,
                         self.spec.metric, cutoff, compared, prune, reason, time.time())
            _append(self.dir, d)
            return d


def _mean(values) -> float:
    values = [float("nan") if v is None else v for v in values]
    return float(sum(values) / len(values))

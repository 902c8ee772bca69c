"""What a screen gets about a run: immutable views the store builds in its poll thread.

`RunView` is one row of the runs table (everything a screen shows about a run),
`RunDetail` the curves and checkpoints of a watched run, `Snapshot` one poll's result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.jobs.slurm import WAITING
from core.runs import LIVE_STATES, number

from .queue_keeper import WorkerStatus
from .series import SeriesData


#: tags whose maximum is a run's "best accuracy"
ACC_TAGS = ("knn/top1", "linear/test_top1", "finetune/test_top1")
#: the loss a row of each kind shows
LOSS_TAGS = {"pretrain": "train/loss", "linear-eval": "linear/train_loss", "finetune": "finetune/train_loss"}


def result_accuracy(result: dict[str, Any] | None) -> float | None:
    """The test top-1 accuracy of an eval result file (``eval/<job>.json``).

    `test_top1` at the top level is the contract; a nested `test_top1` or a plain `top1`
    are accepted for older layouts. Hold-out/validation accuracies are not test results.
    """
    if not result:
        return None

    if number(result.get("test_top1")) is not None:
        return number(result["test_top1"])
    nested = [number(v.get("test_top1")) for v in result.values() if isinstance(v, dict)]
    nested = [v for v in nested if v is not None]
    if nested:
        return max(nested)
    return number(result.get("top1"))


# ---------------------------------------------------------------------- what the UI gets
@dataclass(frozen=True)
class SlurmJob:
    """A run or job submitted with --launcher slurm: its job and Slurm's latest word on it."""

    job_id: str
    state: str | None = None      # Slurm's: PENDING, RUNNING, ...; None until Slurm answered
    reason: str | None = None     # why the run reads as it does (core.jobs.slurm.reconcile), e.g. the pending reason
    partition: str | None = None  # Slurm's answer, else what the job asked for (slurm.json)
    nodes: str | None = None      # where it runs (or ran)
    error: str | None = None      # Slurm could not be asked: the state is the run directory's
    pending: str | None = None    # Slurm's own reason a waiting job waits (Priority, Resources, Dependency)

    def text(self) -> str:
        """One line for the detail screen: ``Slurm job 12 · RUNNING · partition gpu · node n3``."""
        parts = [f"Slurm job {self.job_id}"] + ([self.state] if self.state else [])
        if self.partition:
            parts.append(f"partition {self.partition}")
        if self.nodes:
            parts.append(f"node{'s' * (',' in self.nodes or '[' in self.nodes)} {self.nodes}")
        if self.pending and self.state in WAITING:
            parts.append(f"waiting: {self.pending}")
        return " · ".join(parts)


@dataclass(frozen=True)
class Checkpoint:
    name: str  # "last" or "epoch_0010"
    size: int
    mtime: float


@dataclass(frozen=True)
class RunView:
    """One row of the runs table: everything a screen shows about a run, immutable."""

    key: str  # path relative to the runs dir: "NAME" or "NAME/eval/JOB"
    path: Path
    kind: str
    state: str  # core.runs.effective_state: running, finished, ..., crashed, damaged
    damage: tuple[str, ...]  # why the run is marked damaged (empty when it is not)
    status: dict[str, Any] | None
    config: dict[str, Any] | None
    parent: str | None = None  # eval jobs: the key of the run they evaluate
    dataset: str = ""
    backbone: str = ""
    epoch: float | None = None
    total_epochs: float | None = None
    step: int | None = None
    total_steps: int | None = None
    progress: float | None = None  # 0..1
    loss: float | None = None
    best_acc: float | None = None
    monitor_acc: float | None = None  # pretraining runs: the best of the kNN monitor (knn/top1)
    images_per_sec: float | None = None
    elapsed: float | None = None
    eta: float | None = None
    spark: str = ""
    error: str | None = None
    stop_note: str | None = None  # status.json's note: a stop that did not wait for its step
    result: dict[str, Any] | None = None
    sweep: str | None = None  # sweep.json: the sweep this run belongs to
    swept: dict[str, Any] = field(default_factory=dict)  # sweep.json: its swept values, seed included
    note: str = ""  # notes.json: the user's note
    tags: tuple[str, ...] = ()  # notes.json: the user's tags
    position: int | None = None  # queued runs: 1-based place in the queue (core.jobs.queue.positions)
    slurm: SlurmJob | None = None  # runs and jobs submitted to Slurm

    @property
    def name(self) -> str:
        return self.key.replace("/eval/", " ▸ ")

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES

    @property
    def health(self) -> str | None:
        """status.json's health verdict (core.training.health): ok, collapsed, not learning, diverged."""
        value = (self.status or {}).get("health")
        return value if isinstance(value, str) and value else None

    @property
    def health_reason(self) -> str | None:
        value = (self.status or {}).get("health_reason")
        return value if isinstance(value, str) and value else None

    @property
    def display_state(self) -> str:
        """The state as the table shows it: damaged wins over a finished/stopped state."""
        if self.damage and self.state != "damaged":
            return f"{self.state} ⚠" if self.live else "damaged"
        return self.state


@dataclass(frozen=True)
class RunDetail:
    """The heavier data of runs a screen is watching (detail, compare)."""

    series: dict[str, SeriesData]  # tag, or "tag@job" for evaluation records
    checkpoints: tuple[Checkpoint, ...]


@dataclass(frozen=True)
class SweepFiles:
    """What a sweep's own folder (``RUNS/.sweeps/NAME``) says: its plan and pruning decisions,
    as ``core.report.sweeps.sweep_overview`` gives them (plain dicts)."""

    name: str
    plan: dict[str, Any] | None
    decisions: tuple[dict[str, Any], ...] = ()
    description: str = ""  # core.report.sweeps.describe_plan


@dataclass(frozen=True)
class Snapshot:
    views: dict[str, RunView]
    details: dict[str, RunDetail] = field(default_factory=dict)
    backlog: bool = False  # metrics are still being read: poll again soon
    poll_seconds: float = 0.0
    error: str | None = None
    worker: WorkerStatus | None = None  # the queue worker (None: nothing was ever queued here)
    slurm_error: str | None = None  # Slurm runs are here but Slurm could not be asked
    sweeps: dict[str, SweepFiles] = field(default_factory=dict)  # sweeps with a folder under .sweeps/

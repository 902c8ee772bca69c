"""What a job writes about itself while it runs: status.json, metric records, TensorBoard
curves and timestamped lines on stdout.

The one writer behind both kinds of job: a pretraining run (``core.training.runlog.RunLog``
adds config.json, meta.json and the loop's progress) and an evaluation job
(``core.evaluation.job.EvalJob`` adds its folder, result file and stop handling). See
docs/RUN_DIRECTORY.md for the files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.runs import MetricsWriter, StatusFile
from core.runs.output import say


class JobLog:
    """A job's ``folder/status.json`` (written whole at once, then only what changes), its
    records in ``metrics`` (each with the ``extra`` fields), its TensorBoard events in
    ``folder`` (both opened at the first metric or :meth:`open`) and its stdout lines.

    With ``enabled=False`` (a rank other than 0) it writes and says nothing.
    """

    def __init__(self, folder: Path, kind: str, metrics: Path, extra: dict[str, Any] | None = None,
                 enabled: bool = True, **fields: Any) -> None:
        self.folder, self.metrics_path, self.extra, self.enabled = Path(folder), Path(metrics), extra, enabled
        self.metrics: MetricsWriter | None = None
        self.tb = None
        if enabled:
            self.status = StatusFile(self.folder / "status.json", kind=kind, **fields)
            self.status.update()

    def open(self) -> None:
        """Open metrics and TensorBoard now (else at the first metric)."""
        if self.enabled and self.metrics is None:
            self.metrics = MetricsWriter(self.metrics_path, extra=self.extra)
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(str(self.folder))

    # ------------------------------------------------------------------ while it runs
    def update(self, force: bool = True, **fields: Any) -> None:
        """Change status.json: at once, or with ``force=False`` at most every 10 s."""
        if self.enabled:
            self.status.update(force=force, **fields)

    def metric(self, tag: str, value: float, step: int, epoch: float) -> None:
        """One point of a curve: a metrics.jsonl record and a TensorBoard scalar."""
        if not self.enabled:
            return
        self.open()
        self.metrics.log(tag, value, step, epoch)
        self.tb.add_scalar(tag, value, step)

    def flush(self) -> None:
        """Metrics and TensorBoard to disk (metrics.jsonl fsynced)."""
        if self.metrics is not None:
            self.metrics.flush()
            self.tb.flush()

    def say(self, text: str) -> None:
        if self.enabled:
            say(text)

    # ------------------------------------------------------------------ the last word
    def end(self, state: str, word: str, **fields: Any) -> None:
        """The job ends (``finished`` or ``stopped``): status.json, one line, close."""
        if not self.enabled:
            return
        self.status.update(state=state, **fields)
        self.say(word)
        self.close()

    def fail(self, error: str) -> None:
        """``failed`` with a one-line reason, then close. A full disk is said, not raised."""
        if not self.enabled:
            return
        try:
            self.status.update(state="failed", error=error)
        except OSError as e:  # e.g. the disk is still full: say so, readers will see it crashed
            self.say(f"could not record the failure in status.json: {e}")
        self.say(f"failed: {error}")
        try:
            self.close()
        except OSError as e:  # a full disk: the line that could not be written is lost, the rest is there
            self.say(f"could not close metrics.jsonl: {e}")

    def abandon(self, note: str, **fields: Any) -> str | None:
        """``stopped`` with ``note``, from the stop watcher's thread while the process ends
        (``core.training.stopping``): written even if the main thread is stuck, never
        overwritten after, and nothing printed (the main thread may hold stdout's lock).
        Returns the note recorded."""
        if not self.enabled:
            return None
        self.status.final(state="stopped", **fields, note=note)
        return note

    def close(self) -> None:
        if self.metrics is not None:
            metrics, self.metrics = self.metrics, None
            try:
                metrics.close()  # flushes: raises if the disk is full
            finally:
                self.tb.close()

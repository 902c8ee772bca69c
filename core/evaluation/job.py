"""An evaluation job's files in the run directory (docs/RUN_DIRECTORY.md, "eval jobs").

``runs/NAME/eval/<job>/`` gets the job's own ``status.json`` (kind ``linear-eval``,
``finetune`` or ``knn``; ``parent`` = the run's name; ``checkpoint``), ``stdout.log`` and
TensorBoard events; metric lines go to the run's ``metrics.jsonl`` with ``"job": <job>``
(and ``"started"``, the job's start time, so a reader can tell a re-run's records from an
earlier attempt's); the result goes to ``runs/NAME/eval/<job>.json``, which exists only
while the latest attempt of the job finished. A finished job also adds its test top-1 to the
run's own TensorBoard folder (``eval/linear_top1`` ...) and rewrites the run's HParams row
(``core.training.tbmeta``).

SIGTERM/SIGINT make the job stop at its next check (state ``stopped``, exit 0); an error
marks it ``failed`` with a one-line reason (exit 1).
"""

from __future__ import annotations

import contextlib
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from core.runs import LIVE_STATES, atomic_write_json, effective_state, job_result_path, read_json
from core.runs.output import say
from core.training import tbmeta
from core.training.joblog import JobLog
from core.training.stopping import StopGuard


class StopRequested(Exception):
    """Raised where a job checks for a stop request (SIGTERM/SIGINT) and one came."""


def job_is_live(run_dir: Path, name: str) -> dict[str, Any] | None:
    """The status of that job if it is running now, else None."""
    status = read_json(run_dir / "eval" / name / "status.json")
    return status if effective_state(status) in LIVE_STATES else None


class EvalJob:
    """One evaluation job: its folder, result file and stop handling; while it runs, its
    ``JobLog`` writes status, metrics, TensorBoard and stdout."""

    def __init__(self, run_dir: Path, name: str, kind: str, checkpoint: str) -> None:
        self.run_dir, self.name, self.kind, self.checkpoint = Path(run_dir), name, kind, checkpoint
        self.dir = self.run_dir / "eval" / name
        self.result_path = job_result_path(self.dir)
        self.started = time.time()
        self.log: JobLog | None = None
        self._stop = {"stop": False, "raise": False}
        self._when_finished: list[tuple[str, Callable[[dict[str, Any]], None]]] = []

    # ------------------------------------------------------------------ used by the work
    def say(self, text: str) -> None:
        say(text)

    def metric(self, tag: str, value: float, step: int, epoch: float | None = None) -> None:
        """One point of a live curve: metrics.jsonl (with the job's name) and TensorBoard."""
        if self.log is not None:
            self.log.metric(tag, value, step, step if epoch is None else epoch)

    def progress(self, force: bool = False, **fields: Any) -> None:
        """Refresh status.json (at most every 10 s unless forced): epoch, total_epochs, phase..."""
        if self.log is None:
            return
        self.log.update(force=force, **fields)
        if force:
            self.log.flush()

    def when_finished(self, what: str, action: Callable[[dict[str, Any]], None]) -> None:
        """Run ``action(result)`` once the job finished and its result is written (a picture for the
        run's TensorBoard...). It never fails the job: an error is one line, ``could not <what>: ...``."""
        self._when_finished.append((what, action))

    def should_stop(self) -> bool:
        return self._stop["stop"]

    def check_stop(self) -> None:
        if self._stop["stop"]:
            raise StopRequested

    @contextlib.contextmanager
    def interruptible(self):
        """A stop signal inside this block raises StopRequested at once (long feature extraction)."""
        self.check_stop()
        self._stop["raise"] = True
        try:
            yield
        finally:
            self._stop["raise"] = False

    # ------------------------------------------------------------------ running it
    @contextlib.contextmanager
    def _stop_on_signals(self):
        """SIGTERM/SIGINT set the stop flag while the job runs (``core.training.stopping``: a job stuck
        in native code is ended after the grace period, a second signal ends it at once); the
        old handlers come back after."""
        def on_signal():
            self._stop["stop"] = True
            if self._stop["raise"]:
                self._stop["raise"] = False
                raise StopRequested
        with StopGuard(on_signal=on_signal) as guard:
            guard.on_give_up = self._abandoned
            yield

    def _abandoned(self, why: str) -> str | None:
        """The process ends without the work returning (the stop watcher's thread)."""
        if self.log is None:
            return None
        return self.log.abandon(f"{why}; this job keeps nothing: run it again", phase="stopped")

    def _tell_tensorboard(self, result: dict[str, Any]) -> None:
        """The run's own TensorBoard folder gets the job's test top-1 (``eval/<kind>_top1``) and its
        HParams row and Text are rewritten (``core.training.tbmeta``): still one row per run. Never
        fails the job, whose result is already written."""
        try:
            tbmeta.add_eval_result(self.run_dir, self.kind, self.name, self.checkpoint, result)
            tbmeta.write(self.run_dir)
        except Exception as e:  # noqa: BLE001 - TensorBoard's copy is not the result
            self.say(f"could not add the result to the run's TensorBoard: {e}")

    def run(self, work: Callable[["EvalJob"], dict[str, Any]]) -> int:
        """Run ``work(job)``, which returns the result dict. Exit code: 0 finished or stopped, 1 failed."""
        from core.errors import one_line
        from core.runs.output import tee_to

        self.dir.mkdir(parents=True, exist_ok=True)
        self.result_path.unlink(missing_ok=True)
        for old in self.dir.glob("events.out.tfevents.*"):  # a re-run draws fresh curves
            old.unlink()
        with tee_to(self.dir / "stdout.log"), self._stop_on_signals():
            self.log = log = JobLog(self.dir, self.kind, self.run_dir / "metrics.jsonl",
                                    extra={"job": self.name, "started": round(self.started, 3)},
                                    parent=self.run_dir.name, checkpoint=self.checkpoint, total_epochs=None,
                                    phase="starting")
            log.open()
            log.say(f"{self.name}: evaluating {self.run_dir} ({self.checkpoint})")
            try:
                log.update(state="running")
                result = work(self)
            except StopRequested:
                log.end("stopped", "stopped", phase="stopped")
                return 0
            except Exception as e:  # noqa: BLE001 - any failure is recorded, then reported in one line
                traceback.print_exc()
                log.fail(one_line(e))
                print(f"simclr: failed: {one_line(e)}", file=sys.stderr, flush=True)
                return 1
            finally:
                log.close()
            result = {"job": self.name, "kind": self.kind, "run": self.run_dir.name,
                      "finished": time.time(), "seconds_total": round(time.time() - self.started, 3),
                      **result}
            atomic_write_json(self.result_path, result)
            self._tell_tensorboard(result)
            for what, action in self._when_finished:
                log.update(phase=what)  # the result is written; the job still works (and beats)
                try:
                    action(result)
                except Exception as e:  # noqa: BLE001 - an extra of a finished job, never its result
                    self.say(f"could not {what}: {one_line(e)}")
            log.end("finished", f"finished: test top-1 {result.get('test_top1', float('nan')):.4f} -> {self.result_path}",
                    phase="finished")
            return 0

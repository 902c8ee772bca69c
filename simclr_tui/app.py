"""The simclr-tui application: screens over a runs directory, built by `make_app`.

Data flow: a thread worker polls the runs directory (`RunStore.poll`) and reaps finished
children, then posts one `RunsRefreshed`; the handler renders every screen and only then
arms the next poll, so slow disks or huge metric files make refreshes rarer, never
queued. Launches, stops and deletions also run in thread workers; one
`Worker.StateChanged` handler turns their failures into notifications.
"""

from __future__ import annotations

import dataclasses
import gc
import time
from collections import deque
from pathlib import Path
from typing import Any, Callable, Iterable

from textual import on
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen
from textual.timer import Timer
from textual.worker import Worker, WorkerState

from core.errors import UserError
from core.jobs import service
from core.runs import generate_run_name, write_notes

from .commands import RunCommands
from .launcher import Exited, Launched, Launcher, LaunchError, default_runner, log_tail
from .messages import JobLaunched, RunDeleted, RunsEdited, RunsRefreshed, TensorBoardStarted
from .queue_keeper import QueueKeeper, WorkerStatus
from .screens.compare import CompareScreen
from .screens.detail import RunDetailScreen
from .screens.dialogs import ConfirmScreen, EvalDialog, NotesDialog
from .screens.help import HelpScreen
from .screens.live import LiveScreen
from .screens.new_run import NewRunScreen
from .screens.results import ResultsScreen
from .screens.runs import RunsScreen
from .store import RunDetail, RunStore, RunView, SweepFiles
from .tensorboard import TensorBoard, TensorBoardError

#: seconds between the end of one poll's render and the next poll: a new metric shows within
#: this plus one poll (docs/RELIABILITY.md: p95 0.6 s at 50 runs, 10 live)
POLL_INTERVAL = 0.5


class SimclrApp(App):
    """Runs, New run, Run detail, Compare; TensorBoard on demand."""

    CSS_PATH = "app.tcss"
    TITLE = "simclr-tui"
    COMMANDS = App.COMMANDS | {RunCommands}
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("t", "tensorboard", "TensorBoard"),
        Binding("R", "results", "Results", show=False),
    ]

    def __init__(self, runs_dir: Path, *, runner: list[str] | None = None, poll_interval: float = POLL_INTERVAL,
                 demo: bool = False, tensorboard_program: list[str] | None = None, series_cap: int = 512,
                 start_worker: bool = True, launcher: str = "local") -> None:
        super().__init__()
        self.runs_dir = Path(runs_dir)
        self.poll_interval = poll_interval
        self.demo = demo
        self.store = RunStore(self.runs_dir, cap=series_cap)
        self.launcher = Launcher(self.runs_dir, runner, default=launcher)
        # the queue worker is `python -m core queue work`; the runs it starts use our runner
        job_runner = None if self.launcher.runner == default_runner() else self.launcher.runner
        self.queue_keeper = QueueKeeper(self.runs_dir, job_runner=job_runner, start=start_worker)
        self.worker_status: WorkerStatus | None = None
        self.slurm_error: str | None = None  # Slurm runs are here and Slurm cannot be asked
        self.tensorboard = TensorBoard(self.runs_dir, tensorboard_program)
        self.runs: dict[str, RunView] = {}
        self.loading = True  # metrics files are still being read (until the first poll says not)
        self.details: dict[str, RunDetail] = {}
        self.sweeps: dict[str, SweepFiles] = {}  # the sweeps' own folders (plan, decisions)
        self.polls = 0  # completed polls (tests wait on this)
        #: seconds per poll in the worker, and per render of a poll's result (bench/bench_tui.py)
        self.poll_seconds: deque[float] = deque(maxlen=10_000)
        self.render_seconds: deque[float] = deque(maxlen=10_000)
        self._poll_timer: Timer | None = None
        self._polling = False
        self._poll_again = False
        self._poll_error: str | None = None
        # Titles are set once, before any Header mounts: Textual's Header updates itself from a
        # watcher that can fire while its screen is being removed (NoMatches), so they stay fixed.
        self.sub_title = str(self.runs_dir)

    # .................................................................. lifecycle
    def get_default_screen(self) -> Screen:
        return RunsScreen()

    def on_mount(self) -> None:
        try:
            self.runs_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            self.notify(f"cannot create the runs directory {self.runs_dir}: {e.strerror or e}", severity="error",
                        timeout=30)
        self._start_poll()
        if self.demo:
            name = generate_run_name(self.runs_dir, "demo", "synthetic")
            self.launch("demo run", self.launcher.pretrain, name, ["--preset", "demo"])

    def on_unmount(self) -> None:
        self.tensorboard.stop()  # runs keep going: they are in their own sessions
        gc.unfreeze()

    # .................................................................. polling
    def poll_now(self) -> None:
        """Poll as soon as possible (after a launch/stop), without overlapping polls."""
        if self._polling:
            self._poll_again = True
            return
        if self._poll_timer is not None:
            self._poll_timer.stop()
        self._start_poll()

    def _watched(self) -> frozenset[str]:
        keys: set[str] = set()
        for screen in self.screen_stack:
            keys.update(getattr(screen, "watched_keys", lambda: ())())
        return frozenset(keys)

    def _start_poll(self) -> None:
        self._poll_timer = None
        self._polling = True
        self._poll_again = False
        watched = self._watched()
        self.run_worker(lambda: self._poll(watched), thread=True, group="poll", name="poll", exit_on_error=False)

    def _poll(self, watched: frozenset[str]) -> None:  # thread
        exits = tuple(self.launcher.reap())
        snapshot = self.store.poll(watched)
        snapshot = dataclasses.replace(snapshot, worker=self.queue_keeper.check())  # every few seconds
        self.post_message(RunsRefreshed(snapshot, exits))

    def queue_changed(self) -> None:
        """Something was queued, cancelled or moved: poll now and check the queue worker
        (starting one if queued work waits and none lives)."""
        self.queue_keeper.request()
        self.poll_now()

    def _arm_poll(self, delay: float) -> None:
        self._polling = False
        if self.is_running:
            self._poll_timer = self.set_timer(delay, self._start_poll)

    @on(RunsRefreshed)
    def _refreshed(self, message: RunsRefreshed) -> None:
        t0 = time.perf_counter()
        snap = message.snapshot
        self.runs, self.details, self.sweeps = snap.views, snap.details, snap.sweeps
        if snap.worker and snap.worker.error and snap.worker != self.worker_status:
            self.notify(snap.worker.text(), title="Queue", severity="error", timeout=12)
        self.worker_status = snap.worker
        if snap.slurm_error and snap.slurm_error != self.slurm_error:
            self.notify(f"{snap.slurm_error}; Slurm runs show what their run directories say",
                        title="Slurm", severity="warning", timeout=12)
        self.slurm_error = snap.slurm_error
        self.poll_seconds.append(snap.poll_seconds)
        self._poll_error = None
        if self.loading and not snap.backlog:
            # Everything read so far (widgets, series) lives as long as the app: keep the
            # collector from re-walking it, since full collections were the longest UI
            # pauses in bench/bench_tui.py (~100 ms at 20 runs x 100k points).
            gc.freeze()
        self.loading = snap.backlog
        if snap.error:
            self.notify(snap.error, severity="error", timeout=10)
        for ex in message.exits:
            self._report_exit(ex)
        self._refresh_live_screens()
        self.polls += 1
        self.render_seconds.append(time.perf_counter() - t0)
        soon = snap.backlog or self._poll_again
        self._arm_poll(0.02 if soon else self.poll_interval)

    def _report_exit(self, ex: Exited) -> None:
        if ex.returncode == 0:
            return
        tail = log_tail(ex.log, 600).splitlines()[-3:]
        detail = "\n".join(tail) if tail else f"see {ex.log}"
        what = "killed" if ex.returncode < 0 else f"exited with code {ex.returncode}"
        self.notify(f"{ex.key} {what}:\n{detail}", title="Job ended", severity="error", timeout=15)

    # .................................................................. workers and errors
    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """Every app-level worker failure becomes a notification, never a crash."""
        worker = event.worker
        if event.state != WorkerState.ERROR:
            return
        error = worker.error
        known = isinstance(error, (LaunchError, TensorBoardError, UserError))  # their message says it all
        message = str(error) if known else f"{type(error).__name__}: {error}"
        if worker.group == "poll":
            if message != self._poll_error:  # say it once, not every second
                self.notify(message, title="reading the runs directory failed", severity="error", timeout=12)
            self._poll_error = message
            self._arm_poll(self.poll_interval)
            return
        self.notify(message, title=f"{worker.name or worker.group} failed", severity="error", timeout=12)

    def launch(self, what: str, fn: Callable[..., Launched], *args: Any) -> None:
        """Start a job in a thread worker; JobLaunched or an error notification follows."""

        def work() -> None:
            self.post_message(JobLaunched(fn(*args), what))

        self.run_worker(work, thread=True, group="launch", name=what, exit_on_error=False)

    @on(JobLaunched)
    def _launched(self, message: JobLaunched) -> None:
        job = message.launched
        if job.pid is None:
            self.notify(f"{message.what}: {job.key} (Slurm job {job.slurm_job or '?'}); it shows queued until "
                        f"Slurm starts it", title="Submitted to Slurm")
            self.store.slurm.refresh()
        else:
            self.notify(f"{message.what}: {job.key} (pid {job.pid})", title="Launched")
        if message.what in ("pretrain", "demo run"):
            if isinstance(self.screen, NewRunScreen):
                self.pop_screen()
            self.push_screen(RunDetailScreen(job.key))
        self.poll_now()

    # .................................................................. actions used by screens and the palette
    def view(self, key: str | None) -> RunView | None:
        return self.runs.get(key) if key else None

    def open_run(self, key: str) -> None:
        self.push_screen(RunDetailScreen(key))

    def new_run(self, clone: str | None = None) -> None:
        self.push_screen(NewRunScreen(clone=clone))

    def action_results(self) -> None:
        """The `simclr results` table (grouped by sweep first; g changes the grouping)."""
        if not isinstance(self.screen, ResultsScreen):
            self.push_screen(ResultsScreen())

    def compare(self, keys: Iterable[str]) -> None:
        keys = [k for k in keys if k in self.runs]
        if len(keys) < 2:
            self.notify("select two or more runs to compare (space selects a row)", severity="warning")
            return
        self.push_screen(CompareScreen(keys))

    def stop_runs(self, keys: Iterable[str]) -> None:
        """Stop live runs; queued ones are cancelled instead (after a yes)."""
        views = [v for v in (self.view(k) for k in keys) if v is not None]
        for view in [v for v in views if v.slurm]:  # Slurm's: running or waiting, a job to signal or cancel
            self.run_worker(lambda view=view: self._stop_slurm(view), thread=True, group="stop",
                            name=f"stop {view.name}", exit_on_error=False)
        views = [v for v in views if not v.slurm]
        queued = [v.key for v in views if v.state == "queued"]
        if queued:
            self.cancel_queued(queued)
        for view in views:
            if view.state == "queued":
                continue
            try:
                sig = self.launcher.stop(view)
            except LaunchError as e:
                self.notify(str(e), severity="warning")
                continue
            again = " (again: killing it)" if sig == "SIGKILL" else "; press stop again to kill it"
            self.notify(f"sent {sig} to {view.name}{again}", title="Stop")
        self.poll_now()

    def _stop_slurm(self, view: RunView) -> None:  # thread
        done = self.launcher.stop_slurm(view)
        self.store.slurm.refresh()
        self.call_from_thread(self.notify, done, title="Stop")
        self.call_from_thread(self.poll_now)

    def resume_run(self, key: str) -> None:
        view = self.view(key)
        if view is not None:
            self.launch("resume", self.launcher.resume, view)

    def evaluate_run(self, key: str, checkpoint: str | None = None) -> None:
        view = self.view(key)
        if view is None:
            return
        if view.kind != "pretrain":
            self.notify(f"{view.name} is an evaluation job; evaluate its pretraining run instead", severity="warning")
            return
        if key in self.details:
            ckpts = [c.name for c in self.details[key].checkpoints]
        else:  # one small directory listing
            ckpts = sorted(p.stem for p in (view.path / "checkpoints").glob("*.pt"))
        ckpts.sort(key=lambda c: (c != "last", c))
        if not ckpts:
            self.notify(f"{view.name} has no checkpoint yet", severity="warning")
            return

        def chosen(request: tuple[str, str, float | None] | None) -> None:
            if request:
                kind, ckpt, fraction = request
                self.launch(f"{kind} eval", self.launcher.evaluate, view, kind, ckpt, fraction)

        self.push_screen(EvalDialog(view.name, ckpts, checkpoint), chosen)

    # .................................................................. the queue and notes
    def cancel_queued(self, keys: list[str]) -> None:
        """Take queued runs out of the queue (core.jobs.service.cancel), after a yes/no dialog."""
        names = "\n".join(f"  {k}" for k in keys)

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.run_worker(lambda: self._cancel(keys), thread=True, group="queue", name="cancel",
                                exit_on_error=False)

        question = f"Cancel {len(keys)} queued run(s)? Nothing ran there; their directories are removed.\n{names}"
        self.push_screen(ConfirmScreen(question, "Cancel runs"), confirmed)

    def _cancel(self, keys: list[str]) -> None:  # thread
        done, _ = service.cancel(self.runs_dir, keys)
        self.post_message(RunsEdited(f"cancelled {', '.join(done)}", tuple(done)))

    def move_queued(self, key: str, where: str) -> None:
        """Move a queued run up/down/top/bottom in the queue (core.jobs.service.move)."""
        view = self.view(key)
        if view is not None and view.slurm:
            self.notify(f"{view.name} waits in Slurm (job {view.slurm.job_id}): Slurm orders its queue "
                        f"(scontrol top {view.slurm.job_id}, or ask your admins)", severity="warning")
            return
        def work() -> None:
            service.move(self.runs_dir, key, where)
            self.post_message(RunsEdited())

        self.run_worker(work, thread=True, group="queue", name="move", exit_on_error=False)

    def edit_notes(self, key: str) -> None:
        """The note-and-tags dialog of a run; saved to its notes.json (core.runs.write_notes)."""
        view = self.view(key)
        if view is None:
            return

        def saved(result: tuple[str, str] | None) -> None:
            if result is not None:
                def work() -> None:
                    write_notes(view.path, *result)
                    self.post_message(RunsEdited())

                self.run_worker(work, thread=True, group="notes", name="save notes", exit_on_error=False)

        self.push_screen(NotesDialog(view.name, view.note, view.tags), saved)

    @on(RunsEdited)
    def _runs_edited(self, message: RunsEdited) -> None:
        if message.text:
            self.notify(message.text)
        if isinstance(self.screen, RunDetailScreen) and self.screen.key in message.removed:
            self.pop_screen()
        self.queue_changed()

    def delete_runs(self, keys: Iterable[str]) -> None:
        views = [v for v in (self.view(k) for k in keys) if v is not None]
        # a run cannot go while it, or one of its evaluation jobs, is still writing into it
        live = [r.name for r in self.runs.values() if r.live and any(
            r.key == v.key or r.key.startswith(f"{v.key}/eval/") for v in views)]
        waiting = [v.name for v in views if v.slurm and v.state == "queued"]
        if live or waiting:
            self.notify(f"stop {', '.join(live + waiting)} before deleting (x: a Slurm job waiting is cancelled)",
                        severity="warning")
            return
        if not views:
            return
        names = "\n".join(f"  {v.name}" for v in views)

        def confirmed(yes: bool | None) -> None:
            if yes:
                for v in views:
                    self.run_worker(lambda v=v: self._delete(v), thread=True, group="delete",
                                    name=f"delete {v.name}", exit_on_error=False)

        question = f"Delete {len(views)} run(s) and all their files?\n{names}"
        self.push_screen(ConfirmScreen(question, "Delete"), confirmed)

    def _delete(self, view: RunView) -> None:  # thread
        try:
            service.delete(self.runs_dir, view.key)
        except UserError as e:
            raise LaunchError(str(e)) from None
        self.post_message(RunDeleted(view.key))

    @on(RunDeleted)
    def _deleted(self, message: RunDeleted) -> None:
        self.notify(f"deleted {message.key}")
        if isinstance(self.screen, RunDetailScreen) and self.screen.key == message.key:
            self.pop_screen()
        self.poll_now()

    # .................................................................. app-wide actions
    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_tensorboard(self) -> None:
        if self.tensorboard.running:
            self.run_worker(self.tensorboard.stop, thread=True, group="tensorboard", name="TensorBoard stop",
                            exit_on_error=False)
            self.notify("TensorBoard stopped")
            self._tb_changed()
            return
        self.notify("starting TensorBoard…")

        def work() -> None:
            self.post_message(TensorBoardStarted(self.tensorboard.start()))

        self.run_worker(work, thread=True, group="tensorboard", name="TensorBoard", exit_on_error=False)

    @on(TensorBoardStarted)
    def _tb_started(self, message: TensorBoardStarted) -> None:
        self.notify(f"TensorBoard at {message.url} (localhost only); t stops it", title="TensorBoard", timeout=10)
        self._tb_changed()

    def _tb_changed(self) -> None:
        self._refresh_live_screens()

    def _refresh_live_screens(self) -> None:
        for screen in self.screen_stack:
            if isinstance(screen, LiveScreen):
                screen.refresh_runs()

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        yield SystemCommand("New run", "Open the New-run form", self.new_run)
        yield SystemCommand("TensorBoard", "Start or stop TensorBoard over the runs directory", self.action_tensorboard)
        yield SystemCommand("Help", "Keys and screens", self.action_help)
        yield SystemCommand("Results table", "simclr results: every evaluation, grouped by sweep or config (R)",
                            self.action_results)
        for name, help_text, action in getattr(screen, "palette_commands", lambda: [])():
            yield SystemCommand(name, help_text, action)


def make_app(runs_dir: str | Path = "runs", *, runner: list[str] | None = None, poll_interval: float = POLL_INTERVAL,
             demo: bool = False, tensorboard_program: list[str] | None = None,
             start_worker: bool = True, launcher: str = "local") -> SimclrApp:
    """The app exactly as `simclr-tui` builds it; tests pass a fake runner and a short poll
    (and `start_worker=False` to look at a queue without a worker starting its runs)."""
    return SimclrApp(Path(runs_dir), runner=runner, poll_interval=poll_interval, demo=demo,
                     tensorboard_program=tensorboard_program, start_worker=start_worker, launcher=launcher)

"""What the app knows about the runs directory, rebuilt from the files alone.

`RunStore.poll()` runs in a thread worker: it lists the runs (`core.runs.iter_runs`),
reads each status.json/config.json, tails each metrics.jsonl from its byte offset into
bounded `Series`, and returns an immutable `Snapshot` that the UI thread renders. Nothing
here is shared with the UI thread except through that snapshot, so there are no locks.

Reading is bounded per poll (`budget_bytes`): a directory of twenty 100k-point runs shows
its table at once and fills in the curves over a few polls instead of freezing, and the
parsing never holds more than one chunk of records in memory.

Runs submitted with ``--launcher slurm`` take their state from the run directory first and
Slurm second (`core.jobs.slurm.reconcile`), with Slurm's word from `SlurmWatch`: one `squeue`
for all of them at most every few seconds, asked in its own thread so that a slow or absent
controller never holds up a poll.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from core.jobs.launch import saved_options, slurm_job_of
from core.jobs.queue import Listing, positions
from core.runs import (
    LIVE_STATES,
    RunInfo,
    iter_runs,
    job_result_path,
    list_jobs,
    number,
    read_json,
    read_metrics_chunk,
    read_notes,
    read_run,
    read_sweep,
)
from core.jobs.slurm import RECORD, reconcile

from .series import Series, sparkline
from .slurm_watch import SlurmAnswer, SlurmWatch
from .sweep_files import SweepReader
from .views import (ACC_TAGS, LOSS_TAGS, Checkpoint, RunDetail, RunView, SlurmJob, Snapshot, SweepFiles,
                    result_accuracy)

__all__ = ["RunStore", "RunView", "RunDetail", "Snapshot", "SlurmJob", "Checkpoint", "SweepFiles", "result_accuracy"]

# ---------------------------------------------------------------------- the store
class _Run:
    """Poll-thread state of one run directory."""

    def __init__(self, key: str, cap: int) -> None:
        self.key = key
        self.cap = cap
        self.info: RunInfo | None = None
        self.offset = 0
        self.ino: int | None = None
        self.size = 0
        self.bad_lines = 0
        self.partial = False  # only an incomplete last line is left unread
        self.series: dict[str, Series] = {}
        self.job_started: dict[str, float] = {}  # eval job -> start time of its latest attempt
        self.rate_ref: tuple[int, float] | None = None  # (step, heartbeat) first seen live
        self._files: dict[str, tuple[Any, Any]] = {}  # small side file -> (its stat stamp, what it read)

    def side_file(self, name: str, read: Any) -> Any:
        """``read(run dir)`` for a small file (sweep.json, notes.json), re-read only when it changes."""
        try:
            st = os.stat(self.info.path / name)
            stamp: tuple[int, ...] | None = (st.st_mtime_ns, st.st_ino, st.st_size)  # a rewrite is a new inode
        except OSError:
            stamp = None
        cached = self._files.get(name)
        if cached is None or cached[0] != stamp:
            cached = self._files[name] = (stamp, read(self.info.path) if stamp is not None else None)
        return cached[1]

    def reset_metrics(self) -> None:
        self.offset, self.bad_lines, self.series, self.partial = 0, 0, {}, False
        self.job_started = {}

    def add(self, records: list[dict[str, Any]]) -> None:
        series = self.series
        for rec in records:
            tag = rec["tag"]
            job = rec.get("job")
            if job:
                job = Path(str(job)).name
                started = rec.get("started")
                if isinstance(started, (int, float)) and started != self.job_started.get(job):
                    if started < self.job_started.get(job, 0):
                        continue  # an older attempt's line
                    # a re-run of the job: its curves start again
                    self.job_started[job] = started
                    self.series = {t: s for t, s in series.items() if not t.endswith("@" + job)}
                    series = self.series
                tag = f"{tag}@{job}"
            s = series.get(tag)
            if s is None:
                s = series[tag] = Series(self.cap)
            x = _num(rec.get("epoch"))
            if x is None:
                x = _num(rec.get("step"))
            s.add(float(s.count) if x is None else x, float(rec["value"]))

    @property
    def behind(self) -> bool:
        """Complete records are waiting to be read."""
        return self.offset < self.size and not self.partial


class RunStore:
    """Reads the runs directory; `poll()` is called from a thread worker, one at a time."""

    def __init__(self, runs_dir: str | Path, *, cap: int = 512, budget_bytes: int = 8 << 20,
                 chunk_bytes: int = 2 << 20, slurm: SlurmWatch | None = None) -> None:
        self.runs_dir = Path(runs_dir)
        self.slurm = slurm or SlurmWatch()
        self.cap = cap
        self.budget_bytes = budget_bytes
        self.chunk_bytes = chunk_bytes
        self._runs: dict[str, _Run] = {}
        self._turn = 0  # rotates which run reads first when the budget is short
        self.sweep_files = SweepReader(self.runs_dir)

    # .................................................................. polling
    def poll(self, watched: frozenset[str] = frozenset(), now: float | None = None) -> Snapshot:
        t0 = time.perf_counter()
        now = time.time() if now is None else now
        try:
            infos = list(iter_runs(self.runs_dir, jobs=True))
        except OSError as e:
            return Snapshot({}, error=f"cannot read the runs directory {self.runs_dir}: {e}")
        except Exception:  # noqa: BLE001 - a status.json with wrong types must not hide every run
            infos = list(_iter_runs_carefully(self.runs_dir))
        seen = {}
        for info in infos:
            key = info.path.relative_to(self.runs_dir).as_posix()
            run = self._runs.get(key) or _Run(key, self.cap)
            run.info = info
            seen[key] = run
        self._runs = seen

        # metrics: watched runs first, the rest in rotating order, within the byte budget
        keys = [k for k in seen if k in watched] + self._rotated([k for k in seen if k not in watched])
        budget = self.budget_bytes
        for key in keys:
            budget -= self._tail(seen[key], budget)
        backlog = any(r.behind for r in seen.values())

        places = self._positions(infos)
        answer = self.slurm.latest({j for j in (slurm_job_of(i.status) for i in infos if _worth_asking(i, now)) if j})
        views = {key: self._view(run, now, places.get(key), answer) for key, run in seen.items()}
        details = {key: self._detail(key) for key in watched if key in seen or _parent_key(key) in seen}
        sweeps = self.sweep_files.read()
        return Snapshot(views, details, backlog, time.perf_counter() - t0, slurm_error=answer.error, sweeps=sweeps)

    def _positions(self, infos: list[RunInfo]) -> dict[str, int]:
        """Queue positions, read only when a run is queued (the queue is then listed again)."""
        if not any(info.state == "queued" for info in infos):
            return {}
        try:
            return positions(self.runs_dir, Listing(self.runs_dir, infos))
        except (OSError, ValueError, TypeError):
            return {}

    def _rotated(self, keys: list[str]) -> list[str]:
        if not keys:
            return keys
        self._turn = (self._turn + 1) % len(keys)
        return keys[self._turn:] + keys[: self._turn]

    def _tail(self, run: _Run, budget: int) -> int:
        """Read what is new in the run's metrics.jsonl, at most `budget` bytes; returns bytes read."""
        path = run.info.path / "metrics.jsonl"
        try:
            st = os.stat(path)
        except OSError:
            if run.ino is not None:  # the file went away: forget its records
                run.reset_metrics()
                run.ino, run.size = None, 0
            return 0
        if st.st_ino != run.ino or st.st_size < run.offset:
            # replaced (a resume rewrites it without the records past the checkpoint) or
            # truncated: start over
            run.reset_metrics()
            run.ino = st.st_ino
        if st.st_size != run.size:
            run.partial = False
        run.size = st.st_size
        used = 0
        # the budget is soft: a chunk that starts within it is read whole
        while run.offset < run.size and not run.partial and used < budget:
            records, offset, bad = read_metrics_chunk(path, run.offset, self.chunk_bytes)
            if offset == run.offset:
                run.partial = True  # a writer mid-append, or a truncated file
                break
            used += offset - run.offset
            run.offset = offset
            run.bad_lines += bad
            run.add(records)
        return used

    # .................................................................. building views
    def _job_series(self, key: str) -> dict[str, Series]:
        """An eval job's series: its records in the parent's metrics.jsonl, plus its own file."""
        parent = self._runs.get(_parent_key(key) or "")
        job = key.rsplit("/", 1)[-1]
        out: dict[str, Series] = {}
        if parent:
            suffix = "@" + job
            out = {t[: -len(suffix)]: s for t, s in parent.series.items() if t.endswith(suffix)}
        own = self._runs.get(key)
        if own:
            out.update(own.series)
        return out

    def _series_of(self, key: str) -> dict[str, Series]:
        return self._job_series(key) if "/eval/" in key else self._runs[key].series

    def _detail(self, key: str) -> RunDetail:
        series = {t: s.data() for t, s in self._series_of(key).items()}
        ckpts: list[Checkpoint] = []
        run = self._runs.get(key)
        if run is not None and "/eval/" not in key:
            try:
                for p in sorted((run.info.path / "checkpoints").glob("*.pt")):
                    st = p.stat()
                    ckpts.append(Checkpoint(p.stem, st.st_size, st.st_mtime))
            except OSError:
                pass
        return RunDetail(series, tuple(ckpts))

    def _slurm(self, run: _Run, answer: SlurmAnswer) -> tuple[str, SlurmJob | None]:
        """The run's state with Slurm's word applied (Slurm runs only), and its job."""
        info = run.info
        job_id = slurm_job_of(info.status) if info.state != "damaged" else None
        if job_id is None:
            return info.state, None
        options = run.side_file(RECORD, saved_options)
        asked = options.partition if options else None
        job = answer.jobs.get(job_id)
        state, why = info.state, None
        if answer.knows(job_id):
            state, why = reconcile(info.status or {}, job)
        return state, SlurmJob(job_id, job.state if job else None, why, (job.partition if job else None) or asked,
                               job.nodes if job else None, answer.error,
                               job.reason if job and job.waiting else None)

    def _view(self, run: _Run, now: float, position: int | None = None,
              answer: SlurmAnswer | None = None) -> RunView:
        info = run.info
        key = run.key
        status, config = info.status, info.config
        is_job = "/eval/" in key
        parent = _parent_key(key) if is_job else None
        kind = str((status or {}).get("kind") or ("eval" if is_job else "pretrain"))
        state, slurm = self._slurm(run, answer or SlurmAnswer())
        live = state in LIVE_STATES

        damage = []
        if status is None:
            damage.append("status.json is missing or unreadable")
        elif state == "damaged":
            damage.append("status.json has values of the wrong type")
        if (info.path / "config.json").exists() and config is None:
            damage.append("config.json is unreadable")
        elif config is None and not is_job and not live:
            damage.append("config.json is missing")
        if run.bad_lines:
            damage.append(f"{run.bad_lines} unreadable line(s) in metrics.jsonl")
        if not live and run.partial:
            damage.append("metrics.jsonl ends with a partial line")

        cfg = config
        if is_job and parent in self._runs:
            cfg = self._runs[parent].info.config or {}
        cfg = cfg or {}
        st = status or {}
        series = self._series_of(key)

        loss_s = series.get(LOSS_TAGS.get(kind, "train/loss"))
        # a pretraining run's best includes its evaluation jobs (series "tag@job")
        accs = [s.vmax for t, s in series.items() if t.split("@")[0] in ACC_TAGS and s.vmax is not None]
        result = None
        if is_job:
            result = read_json(job_result_path(info.path))
            acc = result_accuracy(result)
            if acc is not None:
                accs.append(acc)

        # a baseline's status says 0 epochs; its config keeps the epochs of the run it copied
        planned = st.get("total_epochs") if st.get("total_epochs") is not None else cfg.get("epochs")
        epoch, total_epochs = _num(st.get("epoch")), _num(planned)
        step, total_steps = _int(st.get("step")), _int(st.get("total_steps"))
        if total_steps:
            progress = min(1.0, (step or 0) / total_steps)
        elif total_epochs:
            progress = min(1.0, (epoch or 0) / total_epochs)
        else:
            progress = None
        if state == "finished":
            progress = 1.0

        created, beat = _num(st.get("created")), _num(st.get("heartbeat"))
        elapsed = None
        if created and state != "queued":  # a queued run's clock starts when it does
            elapsed = max(0.0, (now if live else (beat or created)) - created)

        ips = _num(st.get("images_per_sec"))
        ips_s = series.get("train/images_per_sec")
        if ips is None and ips_s is not None:
            ips = ips_s.last

        eta = None
        if live:
            if run.rate_ref is None and step and beat:
                run.rate_ref = (step, beat)
            eta = _eta(run.rate_ref, step, beat, total_steps, ips, cfg, created, now, progress, elapsed)
        else:
            run.rate_ref = None

        spark = sparkline(loss_s.values(), 12) if loss_s is not None else ""
        monitor = series.get("knn/top1") if not is_job else None
        sweep = None if is_job else run.side_file("sweep.json", read_sweep)
        note, tags = run.side_file("notes.json", read_notes) or ("", [])
        return RunView(
            key=key, path=info.path, kind=kind, state=state, damage=tuple(damage), status=status,
            config=config, parent=parent, dataset=str(cfg.get("dataset", "")), backbone=str(cfg.get("backbone", "")),
            epoch=epoch, total_epochs=total_epochs, step=step, total_steps=total_steps, progress=progress,
            loss=loss_s.last if loss_s is not None else None, best_acc=max(accs) if accs else None,
            monitor_acc=monitor.vmax if monitor is not None else None,
            images_per_sec=ips, elapsed=elapsed, eta=eta, spark=spark, error=st.get("error"), stop_note=st.get("note"), result=result,
            sweep=sweep["sweep"] if sweep else None, swept=sweep["swept"] if sweep else {}, note=note,
            tags=tuple(tags), position=position if state == "queued" else None, slurm=slurm,
        )


#: a Slurm run that ended longer ago than this is not asked about any more (nothing changes it
#: now but a new submission, which writes a fresh heartbeat): squeue/sacct over hundreds of
#: old jobs every few seconds is load a shared controller does not need
SLURM_QUIET_AFTER = 900.0


def _worth_asking(info: RunInfo, now: float) -> bool:
    status = info.status or {}
    if status.get("state") in ("queued", *LIVE_STATES):
        return True
    beat = _num(status.get("heartbeat"))
    return beat is None or now - beat < SLURM_QUIET_AFTER




def _iter_runs_carefully(runs_dir: Path) -> Iterator[RunInfo]:
    """`iter_runs(jobs=True)` one directory at a time: a run whose files make reading it
    raise (say, a non-numeric heartbeat) is listed as damaged instead of failing the poll."""
    def one(path: Path) -> RunInfo:
        try:
            return read_run(path)
        except Exception:  # noqa: BLE001 - whatever is in the file, the run is shown as damaged
            return RunInfo(path, None, read_json(path / "config.json"), "damaged")

    for p in sorted(runs_dir.iterdir()):
        if p.is_dir() and ((p / "status.json").exists() or (p / "config.json").exists()):
            yield one(p)
            for j in list_jobs(p):
                yield one(j)


def _parent_key(key: str) -> str | None:
    return key.split("/eval/", 1)[0] if "/eval/" in key else None


def _num(v: Any) -> float | None:
    return None if (n := number(v)) is None else float(n)


def _int(v: Any) -> int | None:
    return None if (n := number(v)) is None else int(n)


def _eta(ref: tuple[int, float] | None, step: int | None, beat: float | None, total_steps: int | None,
         ips: float | None, cfg: dict[str, Any], created: float | None, now: float,
         progress: float | None, elapsed: float | None) -> float | None:
    """Seconds left: from the step rate seen while watching, else throughput, else the average."""
    etas = []
    if total_steps and step is not None:
        rate = None
        if ref and beat and step > ref[0] and beat > ref[1]:
            rate = (step - ref[0]) / (beat - ref[1])
        elif ips and _num(cfg.get("batch_size")):
            rate = ips / _num(cfg["batch_size"])
        elif step and elapsed:
            rate = step / elapsed
        if rate:
            etas.append(max(0.0, (total_steps - step) / rate))
    elif progress and elapsed:
        etas.append(elapsed * (1 - progress) / progress)
    budget = _num(cfg.get("time_budget"))
    if budget and created:
        etas.append(max(0.0, created + budget * 60 - now))
    return min(etas) if etas else None

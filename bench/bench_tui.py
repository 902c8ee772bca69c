"""How the TUI copes with a big runs directory: 20 runs x 100,000 metric points.

    python bench/bench_tui.py [--runs 20] [--points 100000] [--live 5] [--keep DIR]

It writes the runs in a child process (so the measured process only ever *reads* them),
then drives the real app headless (`App.run_test`, 120x40) and measures:

* load: time until the table first shows every run, and until all metrics are read;
* poll: the worker thread's time per poll of the runs directory (status + config of every
  run, the new metrics lines of each, bounded series copies for watched runs);
* render: the UI thread's time to apply one poll's result (runs table diffed cell by cell,
  or the visible screen's plots);
* event-loop lag: how late a 20 ms UI timer fires -- what a key press would wait for --
  while loading and while 5 runs keep appending ~100 records/s each;
* frames: re-rendering the Run-detail screen's four plots and a 20-run Compare overlay;
* memory: the process's peak RSS (ru_maxrss) over a baseline app with an empty runs dir,
  and for reference the peak of reading one 100k-line file in one go with
  `core.runs.read_metrics` (measured with tracemalloc in a child process).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


# ---------------------------------------------------------------------- data
def generate(runs_dir: Path, runs: int, points: int, live: int) -> None:
    """`runs` run directories of `points` metric lines each; the first `live` are 'running'
    with this bench's parent pid (so effective_state sees them alive)."""
    from core.runs import atomic_write_json, process_start_time

    parent = os.getppid()
    rng = random.Random(0)
    for r in range(runs):
        d = runs_dir / f"bench-{r:02d}"
        (d / "checkpoints").mkdir(parents=True)
        steps = points - points // 100 - points // 1000
        t0 = 1.7e9
        lines = []
        for s in range(steps):
            lines.append(f'{{"step": {s}, "epoch": {s / 1000:.4f}, "time": {t0 + s:.1f}, "tag": "train/loss", '
                         f'"value": {5 * 0.9999 ** s + 0.05 * rng.random():.5f}}}\n')
            if s % 100 == 0:
                lines.append(f'{{"step": {s}, "epoch": {s / 1000:.4f}, "time": {t0 + s:.1f}, "tag": "train/lr", '
                             f'"value": {0.5 * (1 + (s / steps)):.5f}}}\n')
            if s % 1000 == 0:
                lines.append(f'{{"step": {s}, "epoch": {s / 1000:.4f}, "time": {t0 + s:.1f}, "tag": "knn/top1", '
                             f'"value": {0.9 - 0.8 * 0.9995 ** s:.5f}}}\n')
        (d / "metrics.jsonl").write_text("".join(lines))
        is_live = r < live
        atomic_write_json(d / "status.json", {
            "kind": "pretrain", "state": "running" if is_live else "finished", "pid": parent, "pgid": parent,
            "start_time": process_start_time(parent), "host": socket.gethostname(), "created": time.time() - 3600,
            "heartbeat": time.time(), "epoch": steps // 1000, "step": steps, "total_steps": 2 * steps,
            "total_epochs": 2 * steps // 1000, "images_per_sec": 5000.0, "error": None})
        atomic_write_json(d / "config.json", {"dataset": "cifar10", "backbone": "resnet18", "batch_size": 512,
                                              "lr": 0.5 + r / 100, "epochs": 2 * steps // 1000})
        (d / "checkpoints" / "last.pt").write_bytes(b"")


def append_forever(dirs: list[Path]) -> None:
    """Keeps the live runs growing, like trainers would: a train/loss line per run every 10 ms."""
    files = [open(d / "metrics.jsonl", "a", buffering=1) for d in dirs]
    step = 10**6
    while True:
        time.sleep(0.01)
        step += 1
        for f in files:
            f.write(json.dumps({"step": step, "epoch": step / 1000, "time": time.time(), "tag": "train/loss",
                                "value": 0.1}) + "\n")


# ---------------------------------------------------------------------- measuring
def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def q(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))] if xs else float("nan")


class Lag:
    """Event-loop lag: how late a repeating 20 ms timer fires."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._last = None

    def tick(self) -> None:
        now = time.perf_counter()
        if self._last is not None:
            self.samples.append(max(0.0, now - self._last - 0.02))
        self._last = now

    def take(self) -> list[float]:
        out, self.samples = self.samples, []
        return out


async def measure(runs_dir: Path, runs: int, live: int, seconds: float) -> dict:
    from simclr_tui.app import make_app
    from simclr_tui.screens.compare import CompareScreen
    from simclr_tui.screens.detail import RunDetailScreen
    from simclr_tui.widgets.plot import MetricPlot

    res: dict = {}
    # baseline: the same app over an empty directory
    empty = Path(tempfile.mkdtemp())
    app = make_app(empty, poll_interval=1.0)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause(0.5)
    res["rss_baseline"] = rss_mb()
    shutil.rmtree(empty)

    app = make_app(runs_dir, poll_interval=1.0)
    lag = Lag()
    t0 = time.perf_counter()
    async with app.run_test(size=(120, 40)) as pilot:
        app.set_interval(0.02, lag.tick)
        while len(app.runs) < runs:
            await pilot.pause(0.01)
        res["first_table"] = time.perf_counter() - t0
        while not (app.polls and not app.loading):
            await pilot.pause(0.02)
        res["full_load"] = time.perf_counter() - t0
        res["lag_load"] = lag.take()
        app.poll_seconds.clear()
        app.render_seconds.clear()

        # steady state on the runs table, with live runs appending
        # a separate process, like real trainers: it must not share this process's GIL
        appender = subprocess.Popen([sys.executable, __file__, "--append",
                                     *[str(runs_dir / f"bench-{r:02d}") for r in range(live)]])
        await pilot.pause(seconds)
        res["lag_table"] = lag.take()
        res["poll_table"] = list(app.poll_seconds)
        res["render_table"] = list(app.render_seconds)

        # the detail screen of a live run
        app.poll_seconds.clear()
        app.render_seconds.clear()
        t1 = time.perf_counter()
        app.push_screen(RunDetailScreen("bench-00"))
        plot = None
        while plot is None or not plot.lines:
            await pilot.pause(0.01)
            if isinstance(app.screen, RunDetailScreen):
                plot = app.screen.query_one("#plot-loss", MetricPlot)
        res["open_detail"] = time.perf_counter() - t1
        lag.take()  # opening a screen (mounting its widgets) is measured above, not as lag
        await pilot.pause(seconds)
        res["lag_detail"] = lag.take()
        res["poll_detail"] = list(app.poll_seconds)
        res["render_detail"] = list(app.render_seconds)
        plots = list(app.screen.query(MetricPlot))
        res["points_per_series"] = max(len(line.ys) for p in plots for line in p.lines)
        times = []
        for _ in range(10):
            t = time.perf_counter()
            for p in plots:
                p.render()
            times.append(time.perf_counter() - t)
        res["frame_detail"] = times

        # compare all runs
        app.pop_screen()
        app.push_screen(CompareScreen(sorted(app.runs)))
        while not (isinstance(app.screen, CompareScreen) and len(app.details) == runs):
            await pilot.pause(0.02)
        await pilot.pause(1.5)
        app.screen.action_tab("curves")
        await pilot.pause(0.5)
        cmp_plots = list(app.screen.query(MetricPlot))
        times = []
        for _ in range(5):
            t = time.perf_counter()
            for p in cmp_plots:
                p.render()
            times.append(time.perf_counter() - t)
        res["frame_compare"] = times
        res["render_compare"] = list(app.render_seconds)[-5:]
        res["lag_compare"] = lag.take()
        appender.terminate()
        appender.wait()
    res["rss_peak"] = rss_mb()
    return res


def read_metrics_peak(path: Path) -> tuple[float, float]:
    """Peak traced memory (MB) and time of core.runs.read_metrics on one file, in a child."""
    code = ("import sys, time, tracemalloc; sys.path.insert(0, %r)\n"
            "from core.runs import read_metrics\n"
            "tracemalloc.start(); t = time.perf_counter(); read_metrics(%r, 0)\n"
            "print(tracemalloc.get_traced_memory()[1] / 2**20, time.perf_counter() - t)\n") % (str(ROOT), str(path))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    return float(out[0]), float(out[1])


def chunked_peak(path: Path) -> tuple[float, float]:
    """The same for the TUI's RunStore reading that one run (bounded chunks into series)."""
    one = Path(tempfile.mkdtemp()) / "runs"
    (one / "r").mkdir(parents=True)
    shutil.copy(path.parent / "status.json", one / "r" / "status.json")
    (one / "r" / "metrics.jsonl").symlink_to(path)
    code = ("import sys, time, tracemalloc; sys.path.insert(0, %r)\n"
            "from simclr_tui.store import RunStore\n"
            "tracemalloc.start(); t = time.perf_counter(); s = RunStore(%r)\n"
            "snap = s.poll()\n"
            "while snap.backlog: snap = s.poll()\n"
            "print(tracemalloc.get_traced_memory()[1] / 2**20, time.perf_counter() - t)\n") % (str(ROOT), str(one))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    shutil.rmtree(one.parent)
    return float(out[0]), float(out[1])


def ms(x: float) -> str:
    return f"{1000 * x:.1f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--points", type=int, default=100_000, help="metric lines per run")
    ap.add_argument("--live", type=int, default=5, help="runs that keep appending during the measurement")
    ap.add_argument("--seconds", type=float, default=8.0, help="steady-state seconds per screen")
    ap.add_argument("--keep", type=Path, help="generate into (or reuse) this directory")
    ap.add_argument("--generate", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--append", type=Path, nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.append:
        append_forever(args.append)
        return 0
    if args.generate:
        generate(args.generate, args.runs, args.points, args.live)
        return 0

    runs_dir = args.keep or Path(tempfile.mkdtemp(prefix="bench-tui-")) / "runs"
    if not runs_dir.exists() or not any(runs_dir.iterdir()):
        runs_dir.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--generate", str(runs_dir), "--runs", str(args.runs),
                        "--points", str(args.points), "--live", str(args.live)], check=True)
        print(f"wrote {args.runs} runs x {args.points} points in {time.perf_counter() - t:.1f} s "
              f"({sum(f.stat().st_size for f in runs_dir.glob('*/metrics.jsonl')) / 2**20:.0f} MB)", flush=True)
    one = runs_dir / "bench-10" / "metrics.jsonl"
    rm_peak, rm_time = read_metrics_peak(one)
    ch_peak, ch_time = chunked_peak(one)
    res = asyncio.run(measure(runs_dir, args.runs, args.live, args.seconds))

    rows = [
        ("load", "table shows all runs", f"{res['first_table']:.2f} s"),
        ("load", f"all {args.runs}x{args.points:,} points read", f"{res['full_load']:.2f} s"),
        ("load", "event-loop lag while loading p50 / p99 / max (ms)",
         f"{ms(q(res['lag_load'], .5))} / {ms(q(res['lag_load'], .99))} / {ms(max(res['lag_load'] or [0]))}"),
    ]
    for screen in ("table", "detail"):
        poll, render, lag = res[f"poll_{screen}"], res[f"render_{screen}"], res[f"lag_{screen}"]
        rows += [
            (screen, "poll (worker thread) median / max (ms)", f"{ms(statistics.median(poll))} / {ms(max(poll))}"),
            (screen, "render one poll (UI thread) median / max (ms)",
             f"{ms(statistics.median(render))} / {ms(max(render))}"),
            (screen, "event-loop lag p50 / p99 / max (ms)",
             f"{ms(q(lag, .5))} / {ms(q(lag, .99))} / {ms(max(lag or [0]))}"),
        ]
    rows += [
        ("detail", "open a 100k-point run until its curves show", f"{res['open_detail']:.2f} s"),
        ("detail", "redraw all 4 plots (frame) median (ms)", ms(statistics.median(res["frame_detail"]))),
        ("detail", "points kept per series (bounded)", str(res["points_per_series"])),
        ("compare", f"redraw loss + accuracy overlays of {args.runs} runs (ms)",
         ms(statistics.median(res["frame_compare"]))),
        ("compare", "render one poll (UI thread) median (ms)",
         ms(statistics.median(res["render_compare"])) if res["render_compare"] else "-"),
        ("memory", "peak RSS, baseline app (empty runs dir)", f"{res['rss_baseline']:.0f} MB"),
        ("memory", f"peak RSS, {args.runs} runs loaded + all screens", f"{res['rss_peak']:.0f} MB"),
        ("memory", "one 100k file: core.runs.read_metrics in one go (traced peak, time)",
         f"{rm_peak:.0f} MB, {rm_time:.2f} s"),
        ("memory", "one 100k file: RunStore chunked tail into series (traced peak, time)",
         f"{ch_peak:.0f} MB, {ch_time:.2f} s"),
    ]
    width = max(len(r[1]) for r in rows)
    print(f"\nsimclr-tui benchmark: {args.runs} runs x {args.points:,} points, {args.live} live, "
          f"{os.cpu_count()} CPUs, python {sys.version.split()[0]}")
    print(f"{'screen':8} {'measure':{width}}  value")
    print(f"{'-' * 8} {'-' * width}  {'-' * 22}")
    for screen, what, value in rows:
        print(f"{screen:8} {what:{width}}  {value}")
    if not args.keep:
        shutil.rmtree(runs_dir.parent, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

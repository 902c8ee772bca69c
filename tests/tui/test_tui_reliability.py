"""Issue 7, the TUI's side: several apps and the command line on one runs directory, runs
deleted while shown, 50 runs with 10 live, a metrics file growing at 1,000 lines/s, names
that must not escape, TensorBoard on localhost only. docs/RELIABILITY.md maps each promise
here to its test; the runner's side is tests/test_reliability.py.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tui_helpers import FAKE_RUNNER, screen_text, wait_for, wait_screen

from tests.helpers import write_status

from core.runs import atomic_write_json, process_start_time
from simclr_tui.app import make_app
from simclr_tui.launcher import Launcher, LaunchError
from simclr_tui.screens.detail import RunDetailScreen
from simclr_tui.screens.dialogs import ConfirmScreen
from simclr_tui.store import RunStore
from simclr_tui.tensorboard import TensorBoard, tensorboard_program

ROOT = Path(__file__).resolve().parents[2]
SIZE = (120, 36)
pytestmark = pytest.mark.timeout(60)  # a hang fails the test instead of the session


def app_for(runs_dir, **kw):
    return make_app(runs_dir, runner=FAKE_RUNNER, poll_interval=0.1, **kw)


def state(app, key):
    view = app.runs.get(key)
    return view.state if view else None


def errors(app) -> list[str]:
    return [str(n.message) for n in app._notifications if n.severity == "error"]


# ---------------------------------------------------------------------- sharing a runs directory
@pytest.mark.asyncio
@pytest.mark.timeout(90)
async def test_two_apps_and_the_command_line_on_one_runs_dir(runs_dir, slow_runs):
    """Two TUIs and a shell work on the same runs: each sees every run, one stops the other's
    run, both delete the same run at once, and a run deleted while shown says it is gone."""
    a, b = app_for(runs_dir), app_for(runs_dir)
    async with a.run_test(size=SIZE) as pa, b.run_test(size=SIZE) as pb:
        a.launcher.pretrain("from-a", ["--preset", "tiny", "--epochs", "50"])
        b.launcher.pretrain("from-b", ["--preset", "tiny", "--epochs", "50"])
        shell = subprocess.Popen([*FAKE_RUNNER, "pretrain", "--run-dir", str(runs_dir / "from-cli"), "--preset", "tiny",
                                  "--epochs", "1"], start_new_session=True, stdout=subprocess.DEVNULL)
        want = {"from-a": "running", "from-b": "running", "from-cli": "finished"}
        for app in (a, b):
            await wait_for(pa, lambda app=app: all(state(app, k) == s for k, s in want.items()), what="all runs")
        assert shell.wait(timeout=10) == 0

        # B stops the run A launched: both see it stopped; A reaps its child quietly
        b.stop_runs(["from-a"])
        for app in (a, b):
            await wait_for(pb, lambda app=app: state(app, "from-a") == "stopped", what="stopped everywhere")
        await wait_for(pa, lambda: a.launcher.children == [], what="A reaped its child")

        # A watches from-cli while both apps delete it at the same moment
        a.open_run("from-cli")
        await wait_screen(pa, RunDetailScreen, "#plot-loss")
        b.push_screen(RunDetailScreen("from-cli"))
        await wait_screen(pb, RunDetailScreen, "#plot-loss")
        a.delete_runs(["from-cli"])
        b.delete_runs(["from-cli"])
        await wait_screen(pa, ConfirmScreen, "#yes")
        await wait_screen(pb, ConfirmScreen, "#yes")
        await pa.press("y")
        await pb.press("y")
        for app in (a, b):
            await wait_for(pa, lambda app=app: "from-cli" not in app.runs, what="gone from the table")
        assert not (runs_dir / "from-cli").exists()

        # run directories removed from a shell while shown: a stopped one in B, a live one in A
        b.open_run("from-a")
        await wait_screen(pb, RunDetailScreen, "#plot-loss")
        await wait_for(pb, lambda: "from-a" in b.details, what="details")
        a.open_run("from-b")
        await wait_screen(pa, RunDetailScreen, "#plot-loss")
        shutil.rmtree(runs_dir / "from-a")
        await wait_for(pb, lambda: "from-a" not in b.runs, what="deleted run dropped")
        await wait_for(pb, lambda: "gone:" in screen_text(b), what="gone shown")
        pgid = a.runs["from-b"].status["pgid"]
        os.killpg(pgid, signal.SIGSTOP)  # still alive, but not re-creating files while rmtree runs
        shutil.rmtree(runs_dir / "from-b")
        await wait_for(pa, lambda: "from-b" not in a.runs, what="deleted live run dropped")
        os.killpg(pgid, signal.SIGKILL)
        await pa.pause(0.5)
        assert a.is_running and b.is_running
        assert errors(a) == []  # no failed delete, nothing crashed
        assert [e for e in errors(b) if "from-b" not in e] == []  # (B reports its child's exit)


# ---------------------------------------------------------------------- load
WATCHER = r"""
import asyncio, json, statistics, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from simclr_tui.app import make_app

runs_dir, n_runs, seconds = Path(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])

def vm(key):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024

async def main():
    app = make_app(runs_dir)  # exactly as simclr-tui builds it, at the default poll interval
    out = {}
    async with app.run_test(size=(120, 36)) as pilot:
        t0 = time.monotonic()
        while len(app.runs) < n_runs or app.loading or app.polls < 2:
            assert time.monotonic() - t0 < 60, "runs not loaded"
            await pilot.pause(0.02)
        out["load_seconds"] = time.monotonic() - t0
        print("ready", flush=True)
        live = [k for k, v in app.runs.items() if v.live]
        seen = {k: app.runs[k].loss for k in live}
        lags, end = [], time.monotonic() + seconds
        while time.monotonic() < end:
            await pilot.pause(0.02)
            now = time.time()
            for k in live:
                loss = app.runs[k].loss
                if loss != seen[k]:
                    seen[k] = loss
                    if loss > 1e9:  # a marker: its value is the time it was written
                        lags.append(now - loss)
        out.update(live=len(live), lags=sorted(lags), still_live=sum(app.runs[k].live for k in live),
                   poll_ms=1000 * statistics.median(app.poll_seconds),
                   render_ms=1000 * statistics.median(app.render_seconds))
    out["peak_rss_mb"] = vm("VmHWM")
    print(json.dumps(out), flush=True)

asyncio.run(main())
"""

APPENDER = r"""
import json, random, sys, time
paths, seconds = sys.argv[1:-1], float(sys.argv[-1])
files = [open(p, "a", buffering=1) for p in paths]
rng = random.Random(0)
due = [time.time() + rng.uniform(0, 2) for _ in files]  # each run's next loss marker
step, end = 10**6, time.time() + seconds
while time.time() < end:
    step += 1
    for i, f in enumerate(files):  # 10 lines/s of train/lr per run, like a live trainer
        f.write(json.dumps({"step": step, "epoch": 1.0, "time": time.time(), "tag": "train/lr", "value": 0.1}) + "\n")
        if time.time() >= due[i]:  # every 2 s a loss whose value is the time it was written
            now = time.time()
            f.write(json.dumps({"step": step, "epoch": 1.0, "time": now, "tag": "train/loss", "value": now}) + "\n")
            due[i] = now + 2.0
    time.sleep(0.1)
"""


def _write_runs(runs_dir: Path, runs: int, live: int, points: int) -> list[Path]:
    """`runs` run directories of `points` loss lines each; the first `live` are running (this
    process's pid and start time, so they read as alive)."""
    me, host = os.getpid(), socket.gethostname()
    live_dirs = []
    for r in range(runs):
        d = runs_dir / f"load-{r:02d}"
        d.mkdir()
        with open(d / "metrics.jsonl", "w") as f:
            f.writelines(f'{{"step": {s}, "epoch": {s / 100:.3f}, "time": 0, "tag": "train/loss", '
                         f'"value": {5 - s / points:.5f}}}\n' for s in range(points))
        is_live = r < live
        write_status(d, kind="pretrain", state="running" if is_live else "finished", pid=me, pgid=me,
                     start_time=process_start_time(me), host=host, created=time.time() - 60, heartbeat=time.time(),
                     epoch=1, step=points, total_steps=2 * points, total_epochs=2, error=None)
        atomic_write_json(d / "config.json", {"dataset": "cifar10", "backbone": "resnet18", "batch_size": 256})
        if is_live:
            live_dirs.append(d)
    return live_dirs


def _watch(runs_dir: Path, n_runs: int, seconds: float, live: list[Path] = ()) -> dict:
    """Run the app in a child process (its own memory) until it has loaded the runs, then
    append to the live ones from another process while it watches."""
    app = subprocess.Popen([sys.executable, "-c", WATCHER, str(ROOT), str(runs_dir), str(n_runs), str(seconds)],
                           stdout=subprocess.PIPE, text=True)
    appender = None
    try:
        assert app.stdout.readline().strip() == "ready"
        if live:
            appender = subprocess.Popen([sys.executable, "-c", APPENDER, *(str(d / "metrics.jsonl") for d in live),
                                         str(seconds + 2)])
        result = json.loads(app.stdout.readline())
        assert app.wait(timeout=30) == 0
        return result
    finally:
        for proc in (app, appender):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.mark.timeout(120)
def test_fifty_runs_ten_live_update_within_a_second_in_bounded_memory(tmp_path, capsys):
    """50 runs of SIMCLR_LOAD_POINTS loss lines each (default 2,000), 10 of them live and
    appended to (10 lines/s each, and a loss every 2 s stamped with its write time): the app,
    at its default poll interval (0.5 s), shows each new loss within a second, and its peak memory
    stays within a bound (measured against the same app over an empty runs directory)."""
    points = int(os.environ.get("SIMCLR_LOAD_POINTS", "2000"))
    empty = tmp_path / "empty"
    empty.mkdir()
    baseline = _watch(empty, 0, 0.5)
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    live = _write_runs(runs_dir, 50, 10, points)
    loaded = _watch(runs_dir, 50, 8.0, live)
    lags = loaded["lags"]
    p50, p95, worst = lags[len(lags) // 2], lags[int(len(lags) * 0.95)], lags[-1]
    extra = loaded["peak_rss_mb"] - baseline["peak_rss_mb"]
    with capsys.disabled():
        print(f"\n50 runs x {points} points, 10 live: all loaded in {loaded['load_seconds']:.1f} s; new loss shown "
              f"after p50 {p50:.2f} s, p95 {p95:.2f} s, max {worst:.2f} s ({len(lags)} updates); poll median "
              f"{loaded['poll_ms']:.1f} ms, render median {loaded['render_ms']:.1f} ms; peak RSS "
              f"{loaded['peak_rss_mb']:.0f} MB (empty runs dir: {baseline['peak_rss_mb']:.0f} MB, +{extra:.0f} MB)")
    assert loaded["live"] == loaded["still_live"] == 10
    assert len(lags) >= 25  # about 40: every marker of every live run was seen
    assert p95 < 1.0  # the promise; measured 0.55 s (one 0.5 s poll interval + poll + render)
    assert worst < 1.5  # margin for two busy shared cores
    assert extra < 100  # measured +12 MB at 2,000 points per run (docs/RELIABILITY.md)


# ---------------------------------------------------------------------- a fast writer
WRITER = r"""
import json, os, sys, time
sys.path.insert(0, sys.argv[1])
from core.runs import MetricsWriter
path, n, rate, torn = sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5] == "torn"
writer = MetricsWriter(path) if not torn else None
raw = open(path, "ab", buffering=0) if torn else None
t0 = time.perf_counter()
for i in range(n):
    delay = t0 + i / rate - time.perf_counter()
    if delay > 0:
        time.sleep(delay)
    if torn:  # a writer that gets preempted mid-line: two writes, the reader may see the first alone
        line = json.dumps({"step": i, "epoch": i / 100, "time": time.time(), "tag": "train/loss",
                           "value": time.time()}).encode() + b"\n"
        raw.write(line[:20])
        if i % 10 == 0:
            time.sleep(0.002)
        raw.write(line[20:])
    else:
        writer.log("train/loss", time.time(), i, i / 100)
print(n / (time.perf_counter() - t0))
"""


def test_metrics_appended_at_1000_lines_per_second_are_read_completely(tmp_path):
    """Two runs appended at 1,000 lines/s each for 3 s (one through MetricsWriter, one that
    writes every line in two pieces): polling every 50 ms, the store never counts a partial
    line as damage, falls behind by well under a second, and ends with every record."""
    n = 3000
    me = os.getpid()
    runs = {}
    for mode in ("whole", "torn"):
        d = tmp_path / mode
        d.mkdir()
        (d / "metrics.jsonl").touch()
        write_status(d, kind="pretrain", state="running", pid=me, start_time=process_start_time(me),
                     host=socket.gethostname(), heartbeat=time.time(), created=time.time())
        atomic_write_json(d / "config.json", {"dataset": "cifar10"})
        argv = [sys.executable, "-c", WRITER, str(ROOT), str(d / "metrics.jsonl"), str(n), "1000", mode]
        runs[mode] = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    store = RunStore(tmp_path)
    lags = []
    while any(p.poll() is None for p in runs.values()):
        snap = store.poll(frozenset(runs))
        now = time.time()
        for mode in runs:
            view = snap.views[mode]
            assert view.damage == (), view.damage
            if view.loss is not None:
                lags.append(now - view.loss)
        time.sleep(0.05)
    rates = {mode: float(p.stdout.read()) for mode, p in runs.items()}
    snap = store.poll(frozenset(runs))
    for mode in runs:
        loss = snap.details[mode].series["train/loss"]
        assert loss.count == n and snap.views[mode].damage == ()
        write_status(tmp_path / mode, kind="pretrain", state="finished")
    final = store.poll()
    assert all(final.views[m].damage == () for m in runs)  # no partial line left once the writers ended
    lags.sort()
    print(f"\nwriters at {rates['whole']:.0f} and {rates['torn']:.0f} lines/s; reader lag p50 "
          f"{lags[len(lags) // 2] * 1000:.0f} ms, max {lags[-1] * 1000:.0f} ms")
    assert min(rates.values()) > 700  # the writers really ran at about 1,000 lines/s
    assert lags[len(lags) // 2] < 0.5 and lags[-1] < 2.0


# ---------------------------------------------------------------------- names and launches
BAD_NAMES = ["../x", "../../etc", "/abs", "/tmp/x", "a/../../b", "a/b", "..", ".", "", " ", "a b", "x\n", "-rf",
             "$(touch pwned)", "`id`", "; rm -rf ~", "a;b", "~", "é", "a\x00b", "name*", ".hidden", "x" * 101]


def test_names_never_escape_the_runs_dir(runs_dir, tmp_path):
    """Names from the form (`Launcher.pretrain`, which the form's launch calls): path
    separators, `..`, absolute paths, shell syntax, control characters and a symlink that
    points outside are all refused, and nothing is created anywhere."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (runs_dir / "link").symlink_to(outside, target_is_directory=True)
    launcher = Launcher(runs_dir, FAKE_RUNNER)
    for name in [*BAD_NAMES, "link"]:
        with pytest.raises(LaunchError):
            launcher.pretrain(name, ["--preset", "tiny"])
    assert launcher.children == []
    assert [p.name for p in runs_dir.iterdir()] == ["link"] and list(outside.iterdir()) == []
    assert not Path("pwned").exists()


def test_launches_are_argument_lists_without_a_shell(runs_dir, fast_runs, monkeypatch):
    """What reaches Popen: a list whose items are passed to the program as they are (a name
    or flag holding shell syntax stays one literal argument), no shell."""
    import subprocess as sp

    seen = []
    real = sp.Popen

    def spy(args, *a, **kw):
        seen.append((args, kw))
        return real(args, *a, **kw)

    monkeypatch.setattr(sp, "Popen", spy)
    launcher = Launcher(runs_dir, FAKE_RUNNER)
    launcher.pretrain("ok", ["--preset", "tiny", "--data-dir", "$(touch pwned); `id`"])
    deadline = time.monotonic() + 30
    while not launcher.reap():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    (args, kw), = seen
    assert isinstance(args, list) and not kw.get("shell", False)
    assert args[-1] == "$(touch pwned); `id`"
    assert json.loads((runs_dir / "ok" / "config.json").read_text())["data_dir"] == "$(touch pwned); `id`"
    assert not Path("pwned").exists() and not (runs_dir / "pwned").exists()


# ---------------------------------------------------------------------- TensorBoard
def _listening(port: int) -> list[str]:
    """Local addresses (hex, as /proc/net/tcp* writes them) of sockets listening on `port`."""
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            local, st = row.split()[1], row.split()[3]
            addr, hexport = local.rsplit(":", 1)
            if st == "0A" and int(hexport, 16) == port:  # 0A: LISTEN
                out.append(addr)
    return out


LOOPBACK = {"0100007F", "00000000000000000000000001000000"}  # 127.0.0.1, ::1


@pytest.mark.skipif(tensorboard_program() is None, reason="TensorBoard is not installed")
@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs /proc/net/tcp")
def test_tensorboard_listens_on_localhost_only(tmp_path):
    """The real TensorBoard, started as the app starts it: every socket it listens on is a
    loopback address (a wildcard 0.0.0.0 / :: would be reachable from the network)."""
    tb = TensorBoard(tmp_path, startup_timeout=45)
    url = tb.start()
    try:
        port = int(url.rstrip("/").rsplit(":", 1)[1])
        addrs = _listening(port)
        assert addrs and set(addrs) <= LOOPBACK, addrs
    finally:
        tb.stop()
    assert tb.proc is None and _listening(port) == []

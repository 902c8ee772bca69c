"""Peak resident memory of CIFAR-10 pretraining runs, each in its own child process.

    python3 bench/bench_memory.py [--data-dir ../shared/data/cifar10] [--steps 40] [--no-full]

Each row is one ``python -m core pretrain ...`` child (the same as ``simclr pretrain``) in a
temporary run directory; its peak RSS is the kernel's ``ru_maxrss`` for that child, read with
``os.wait4`` (so rows do not mix), and its RSS is also sampled every 0.2 s to show when the
peak happens. Rows:

* ``import only``: ``python -c "import core.training.trainer"``, the floor every run starts from;
* ``cifar10-cpu``: the CPU preset (ResNet-18 width 16, 24 px, batch 128) on CIFAR-10 from the class-
  folder zips for ``--steps`` steps, then, as every run that stops mid-epoch, the kNN monitor
  (10,000 train + 10,000 test images) and a checkpoint;
* ``cifar10-resnet18``: the paper's recipe (width 64, batch 512) for 2 steps, monitor off
  (``--no-full`` skips it; on 2 CPU cores a step takes ~20 s);
* each run again with ``SIMCLR_KEEP_FREED_MEMORY=0``: without ``core.training.device.keep_freed_memory``
  (on CPU, malloc keeps freed activation memory for reuse: faster steps, higher peak).

The decoded images come from the on-disk cache (``~/.cache/simclr-tui``); the first run ever
decodes the JPEGs (~15 s) and its peak includes that. The TUI's memory is measured by
``bench/bench_tui.py``. The measured numbers are in docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "cifar10"


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        return None
    return None


def measure(argv: list[str], log: Path) -> tuple[float, float, list[tuple[float, float]], int]:
    """(peak MB from wait4, wall s, RSS samples (t, MB), exit code) of one child."""
    t0 = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    samples: list[tuple[float, float]] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            mb = rss_mb(proc.pid)
            if mb is not None:
                samples.append((time.perf_counter() - t0, mb))
            done.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, usage = os.wait4(proc.pid, 0)
    done.set()
    sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_maxrss / 1024, time.perf_counter() - t0, samples, proc.returncode


def when_peak(samples: list[tuple[float, float]]) -> str:
    """When the sampled RSS peaked."""
    if not samples:
        return "-"
    t_peak, mb = max(samples, key=lambda s: s[1])
    return f"sampled peak {mb:,.0f} MB at {t_peak:.0f} s"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    p.add_argument("--steps", type=int, default=40, help="steps of the cifar10-cpu run")
    p.add_argument("--no-full", action="store_true", help="skip the full-width recipe row")
    p.add_argument("--keep", type=Path, default=None, help="keep the run directories here")
    args = p.parse_args()

    root = args.keep or Path(tempfile.mkdtemp(prefix="bench-memory-"))
    root.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    common = ["--dataset", "folder", "--data-dir", str(args.data_dir)]
    rows = {
        "import only (python -c 'import core.training.trainer')": [py, "-c", "import core.training.trainer"],
        f"cifar10-cpu preset, {args.steps} steps + kNN monitor + checkpoint":
            [py, "-m", "core", "pretrain", "--preset", "cifar10-cpu", *common, "--max-steps", str(args.steps),
             "--run-dir", str(root / "cifar10-cpu")],
    }
    rows["... the same with SIMCLR_KEEP_FREED_MEMORY=0 (glibc's default malloc)"] = \
        ["env", "SIMCLR_KEEP_FREED_MEMORY=0", *rows[list(rows)[-1]][:-1], str(root / "cifar10-cpu-malloc")]
    if not args.no_full:
        rows["cifar10-resnet18 recipe (width 64, batch 512), 2 steps, monitor off"] = [
            py, "-m", "core", "pretrain", "--preset", "cifar10-resnet18", *common, "--max-steps", "2",
            "--knn-every", "0", "--run-dir", str(root / "cifar10-resnet18")]
        rows["... the same with SIMCLR_KEEP_FREED_MEMORY=0"] = \
            ["env", "SIMCLR_KEEP_FREED_MEMORY=0", *rows[list(rows)[-1]][:-1], str(root / "cifar10-resnet18-malloc")]

    print(f"load average at start {'/'.join(f'{v:.2f}' for v in os.getloadavg())}; runs in {root}\n")
    results = []
    for name, argv in rows.items():
        log = root / f"{len(results)}.log"
        peak, wall, samples, code = measure(argv, log)
        results.append((name, peak, wall, when_peak(samples), code))
        print(f"  {name}: peak {peak:,.0f} MB, {wall:.0f} s, exit {code}", flush=True)
        if code != 0:
            print(log.read_text()[-2000:])
    print(f"\nload average at end {'/'.join(f'{v:.2f}' for v in os.getloadavg())}\n")
    print("| process | peak RSS (ru_maxrss) | wall time | when |")
    print("| --- | ---: | ---: | --- |")
    for name, peak, wall, when, code in results:
        print(f"| {name} | {peak:,.0f} MB | {wall:.0f} s | {when}{'' if code == 0 else f' (exit {code})'} |")


if __name__ == "__main__":
    main()

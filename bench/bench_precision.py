"""``--precision auto`` against fp32 on this CPU: the cifar10-cpu preset's images/sec and loss.

    python3 bench/bench_precision.py [--data-dir ../shared/data/cifar10] [--steps 60] [--repeats 2] [--bf16]

Runs ``simclr pretrain --preset cifar10-cpu --max-steps STEPS --knn-every 0`` with
``--precision fp32`` and ``--precision auto`` alternately, REPEATS times each (``--bf16``
adds a forced ``--precision bf16`` row, to see what bf16 does here whatever auto chose),
each in its own process and run directory, and prints per run: images/sec (the run's last
``train/images_per_sec``, a window of steps after the first), the loss at the last step and
what meta.json says auto chose and why; then the mean auto/fp32 ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def one(data_dir: str, precision: str, steps: int, run: Path) -> dict:
    cmd = [sys.executable, "-m", "core", "pretrain", "--preset", "cifar10-cpu", "--dataset", "folder",
           "--data-dir", data_dir, "--max-steps", str(steps), "--knn-every", "0",
           "--precision", precision, "--run-dir", str(run)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, cwd=REPO)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    ips = [r["value"] for r in records if r["tag"] == "train/images_per_sec"]
    loss = [r["value"] for r in records if r["tag"] == "train/loss"]
    meta = json.loads((run / "meta.json").read_text())
    return {"precision": precision, "images_per_sec": ips[-1], "loss": loss[-1],
            "used": meta.get("precision", {}).get("used"), "why": meta.get("precision", {}).get("why")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "cifar10"))
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--bf16", action="store_true", help="also a forced --precision bf16 row")
    args = ap.parse_args()
    sides = ["fp32", "auto"] + (["bf16"] if args.bf16 else [])
    out = Path(tempfile.mkdtemp(prefix="bench-precision-"))
    rows: dict[str, list[dict]] = {s: [] for s in sides}
    for r in range(args.repeats):
        for side in sides:
            row = one(args.data_dir, side, args.steps, out / f"{side}-{r}")
            rows[side].append(row)
            print(f"{side:5s} #{r}: {row['images_per_sec']:7.1f} images/s, loss {row['loss']:.4f} "
                  f"at step {args.steps}; used {row['used']} ({row['why']})", flush=True)
    mean = {s: statistics.mean(x["images_per_sec"] for x in rows[s]) for s in sides}
    for s in sides[1:]:
        print(f"{s} / fp32 images/sec: {mean[s] / mean['fp32']:.2f}x "
              f"({mean[s]:.1f} vs {mean['fp32']:.1f}, mean of {args.repeats})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

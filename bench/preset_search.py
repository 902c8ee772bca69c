"""Choose the `cifar10-cpu` preset by measurement: which recipe learns the most per minute.

Each candidate pretrains for the same short time budget on real CIFAR-10 (class-folder
zips), then the kNN monitor (k=200, cosine) scores the encoder on 10,000 test images.
Candidates run one after another in the same session, so they see the same machine.

    python bench/preset_search.py --data-dir ../shared/data/cifar10 --minutes 2.5

Prints a markdown table; docs/PRESETS.md records the run that chose the preset.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BASE = ["--dataset", "folder", "--image-size", "32", "--epochs", "1000", "--knn-every", "1000",
        "--checkpoint-every", "0", "--warmup-epochs", "0.25", "--jitter-strength", "0.5",
        "--precision", "fp32"]  # as the first searches ran; a candidate's own --precision comes later and wins

ADAM = ["--optimizer", "adam", "--lr", "2e-3", "--lr-scaling", "none", "--weight-decay", "1e-6"]
PX24, FP32, BF16 = ["--image-size", "24"], ["--precision", "fp32"], ["--precision", "bf16"]
CANDIDATES = {
    # the preset before this search: the paper's CIFAR recipe at width 16
    "w16-b256-lars-t0.5": ["--width", "16", "--batch-size", "256", "--optimizer", "lars", "--lr", "1.0", "--temperature", "0.5"],
    "w16-b256-lars-t0.2": ["--width", "16", "--batch-size", "256", "--optimizer", "lars", "--lr", "1.0", "--temperature", "0.2"],
    "w16-b256-adam-t0.2": ["--width", "16", "--batch-size", "256", *ADAM, "--temperature", "0.2"],
    "w16-b128-adam-t0.2": ["--width", "16", "--batch-size", "128", *ADAM, "--temperature", "0.2"],
    "w16-b64-adam-t0.2": ["--width", "16", "--batch-size", "64", *ADAM, "--temperature", "0.2"],
    "w16-b128-adam-t0.5": ["--width", "16", "--batch-size", "128", *ADAM, "--temperature", "0.5"],
    "w8-b128-adam-t0.2": ["--width", "8", "--batch-size", "128", *ADAM, "--temperature", "0.2"],
    "w32-b128-adam-t0.2": ["--width", "32", "--batch-size", "128", *ADAM, "--temperature", "0.2"],
    # resolution: fewer pixels buy more steps (features are then extracted at that size too)
    "w16-b128-adam-t0.2-24px": ["--width", "16", "--batch-size", "128", *ADAM, "--temperature", "0.2", "--image-size", "24"],
    "w16-b128-adam-t0.2-16px": ["--width", "16", "--batch-size", "128", *ADAM, "--temperature", "0.2", "--image-size", "16"],
    # bf16 where the CPU has it (issue 24): the same recipe's steps are cheaper, so does the
    # knee in width, batch, temperature or lr move? (all 24 px; fp32 is the control)
    "w16-b128-t0.2-24px-fp32": ["--width", "16", "--batch-size", "128", *ADAM, "--temperature", "0.2", *PX24, *FP32],
    "w16-b128-t0.2-24px-bf16": ["--width", "16", "--batch-size", "128", *ADAM, "--temperature", "0.2", *PX24, *BF16],
    "w24-b128-t0.2-24px-bf16": ["--width", "24", "--batch-size", "128", *ADAM, "--temperature", "0.2", *PX24, *BF16],
    "w32-b128-t0.2-24px-bf16": ["--width", "32", "--batch-size", "128", *ADAM, "--temperature", "0.2", *PX24, *BF16],
    "w16-b256-t0.2-24px-bf16": ["--width", "16", "--batch-size", "256", *ADAM, "--temperature", "0.2", *PX24, *BF16],
    "w16-b128-t0.15-24px-bf16": ["--width", "16", "--batch-size", "128", *ADAM, "--temperature", "0.15", *PX24, *BF16],
    "w16-b128-t0.1-24px-bf16": ["--width", "16", "--batch-size", "128", *ADAM, "--temperature", "0.1", *PX24, *BF16],
    "w24-b128-t0.15-24px-bf16": ["--width", "24", "--batch-size", "128", *ADAM, "--temperature", "0.15", *PX24, *BF16],
    "w16-b128-t0.15-lr4e-3-24px-bf16": ["--width", "16", "--batch-size", "128", *ADAM, "--lr", "4e-3",
                                         "--temperature", "0.15", *PX24, *BF16],
    "w16-b128-t0.2-lr4e-3-24px-bf16": ["--width", "16", "--batch-size", "128", *ADAM, "--lr", "4e-3", "--temperature", "0.2",
                                        *PX24, *BF16],
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default="../shared/data/cifar10")
    ap.add_argument("--minutes", type=float, default=2.5, help="training budget per candidate")
    ap.add_argument("--only", nargs="*", help="candidate names to run (default: all)")
    args = ap.parse_args()
    out = Path(tempfile.mkdtemp(prefix="preset-search-"))
    from core.training.precision import cpu_flags, cpu_model
    print(f"{cpu_model()} ({', '.join(sorted(cpu_flags())) or 'no bf16 instructions'}), "
          f"{os.cpu_count()} cores, {args.minutes} min per candidate", flush=True)
    rows = []
    for name, flags in CANDIDATES.items():
        if args.only and name not in args.only:
            continue
        run = out / name
        t0 = time.time()
        cmd = [sys.executable, "-m", "core", "pretrain", *BASE, "--data-dir", args.data_dir, *flags,
               "--time-budget", str(args.minutes), "--run-dir", str(run)]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        # the kNN monitor runs once at the end of a budgeted run: that is the score
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        knn = [r["value"] for r in records if r["tag"] == "knn/top1"]
        ips = [r["value"] for r in records if r["tag"] == "train/images_per_sec"]
        status = json.loads((run / "status.json").read_text())
        rows.append((name, status["step"], sorted(ips)[len(ips) // 2] if ips else float("nan"),
                     knn[-1] if knn else float("nan"), time.time() - t0, os.getloadavg()[1]))
        print(row(rows[-1]), flush=True)
    print("\n| candidate | steps | pairs/s | kNN top-1 | wall s | load (5 min) |\n|---|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: -r[3]):
        print(row(r))
    return 0


def row(r: tuple) -> str:
    return f"| {r[0]} | {r[1]} | {r[2]:.0f} | {r[3]:.4f} | {r[4]:.0f} | {r[5]:.1f} |"


if __name__ == "__main__":
    sys.exit(main())

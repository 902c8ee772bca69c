"""A real CIFAR-10 study run twice: every member to the end, then with ``--prune asha``.

    python bench/prune_study.py --data-dir ../shared/data/cifar10 --out runs-study

Each study is ``simclr sweep`` (temperature x lr, 2 seeds, the ``cifar10-cpu`` recipe for 4
epochs, no time budget) worked off by ``simclr queue work`` with one slot. To fit two
studies in an hour on two CPU cores the training set is a class-balanced tenth of CIFAR-10
(the first 1,000 images of each class, copied out of train.zip once); the kNN monitor
queries the whole test split. Printed: each study's wall time and summed member time (first status write to last
heartbeat), the members pruned, and the best setting by the mean final kNN top-1 of its
finished seeds, for docs/RESULTS.md. Both studies run in this process's lifetime, one after
the other, on the same machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GRID = ["--grid", "temperature=0.2,0.5", "--grid", "lr=2e-3,2e-4", "--seeds", "0,1"]
RECIPE = ["--preset", "cifar10-cpu", "--dataset", "folder", "--epochs", "4"]
PER_CLASS = 1000


def simclr(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "core", *args], capture_output=True, text=True, check=True,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))


def study(out: Path, name: str, data_dir: str, prune: list[str]) -> dict:
    runs = out / name
    config = out / "no-budget.json"  # the preset's 10-minute budget off: every member trains 4 epochs
    config.write_text(json.dumps({"time_budget": None}))
    simclr("sweep", name, "--runs-dir", str(runs), *GRID, *prune, "--slots", "1", "--no-start", "--",
           *RECIPE, "--data-dir", data_dir, "--config", str(config))
    t0 = time.time()
    simclr("queue", "work", "--runs-dir", str(runs))
    wall = time.time() - t0
    shown = json.loads(simclr("sweep", "show", name, "--runs-dir", str(runs), "--format", "json").stdout)
    member_s, finals = 0.0, {}
    for m in shown["members"]:
        st = json.loads((runs / m["run"] / "status.json").read_text())
        member_s += st["heartbeat"] - st["created"]
        if m["state"] == "finished":
            finals.setdefault(m["setting"], []).append(m["knn_top1"])
    means = {s: sum(v) / len(v) for s, v in finals.items()}
    return {"study": name, "wall_s": round(wall, 1), "member_s": round(member_s, 1), "counts": shown["counts"],
            "pruned": [(m["run"], m["epoch"]) for m in shown["members"] if m["state"] == "pruned"],
            "means": {s: round(v, 4) for s, v in means.items()}, "best": max(means, key=means.get),
            "decisions": len(shown["decisions"])}


def tenth(src: Path, dst: Path) -> Path:
    """train/<class>/ with the first PER_CLASS images of each class, and the whole test split."""
    import zipfile

    if (dst / "done").exists():
        return dst
    for split, keep in (("train", PER_CLASS), ("test", None)):
        with zipfile.ZipFile(src / f"{split}.zip") as z:
            taken: dict[str, int] = {}
            for info in z.infolist():
                parts = info.filename.split("/")
                if info.is_dir() or len(parts) != 3:
                    continue
                if keep is not None and taken.get(parts[1], 0) >= keep:
                    continue
                taken[parts[1]] = taken.get(parts[1], 0) + 1
                out = dst / info.filename
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(z.read(info))
    (dst / "done").write_text("")
    return dst


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--out", default="runs-study")
    p.add_argument("--only", choices=("full", "asha"))
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data_dir = str(tenth(Path(args.data_dir), out / "cifar10-tenth").resolve())
    results = []
    if args.only in (None, "full"):
        results.append(study(out, "full", data_dir, []))
        print(json.dumps(results[-1], indent=2), flush=True)
    if args.only in (None, "asha"):
        results.append(study(out, "asha", data_dir, ["--prune", "asha", "--min-epochs", "1",
                                                     "--reduction-factor", "2"]))
        print(json.dumps(results[-1], indent=2), flush=True)
    if len(results) == 2:
        full, asha = results
        print(f"asha/full: wall {asha['wall_s'] / full['wall_s']:.2f}, member time "
              f"{asha['member_s'] / full['member_s']:.2f}; same best setting: {asha['best'] == full['best']}")


if __name__ == "__main__":
    main()

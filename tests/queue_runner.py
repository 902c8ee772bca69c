"""A torch-free stand-in for `python -m core` that the queue worker starts in tests.

`pretrain --run-dir DIR --config DIR/config.json` and `knn|linear-eval|finetune --run-dir DIR`
write the run-directory contract the worker reads (status.json with pid and start time,
finished/stopped, an eval job's status and result) and append one line per process to
``$QUEUE_TRACE`` (``start``/``end`` with name, pid, time and CUDA_VISIBLE_DEVICES), so a
test can check that every run ran exactly once and never two at a time.

A run lasts ``QUEUE_RUN_SECONDS`` (default 1.0); SIGTERM stops it (state ``stopped``). A
config whose ``data_dir`` is a folder named ``missing`` is refused as the real runner refuses missing
data: one line ``simclr: error: ...`` and exit 2, nothing written.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.runs import StatusFile, atomic_write_json, job_result_path, read_json  # noqa: E402

stop = False


def on_term(signum, frame) -> None:  # noqa: ARG001
    global stop
    stop = True


def trace(event: str, name: str) -> None:
    path = os.environ.get("QUEUE_TRACE")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"event": event, "name": name, "pid": os.getpid(), "time": time.time(),
                                "gpu": os.environ.get("CUDA_VISIBLE_DEVICES")}) + "\n")


def work(status: StatusFile, name: str) -> str:
    trace("start", name)
    end = time.time() + float(os.environ.get("QUEUE_RUN_SECONDS", "1.0"))
    status.update(state="running")
    while time.time() < end and not stop:
        time.sleep(0.05)
    trace("end", name)
    return "stopped" if stop else "finished"


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGTERM, on_term)
    command, args = argv[0], dict(zip(argv[1::2], argv[2::2]))
    run_dir = Path(args["--run-dir"])
    if command == "pretrain":
        cfg = read_json(args["--config"]) or {}
        if Path(cfg.get("data_dir", "")).name == "missing":
            print(f"simclr: error: --data-dir {cfg['data_dir']} does not exist; point it at the dataset", file=sys.stderr)
            return 2
        status = StatusFile(run_dir / "status.json", total_epochs=cfg.get("epochs"))
        status.update(state="starting")
        state = work(status, run_dir.name)
        status.update(state=state, epoch=cfg.get("epochs", 1) if state == "finished" else 0)
        return 0
    kind = {"linear-eval": "linear"}.get(command, command)
    job = f"{kind}-last"
    job_dir = run_dir / "eval" / job
    job_dir.mkdir(parents=True, exist_ok=True)
    status = StatusFile(job_dir / "status.json", kind=command, parent=run_dir.name, checkpoint="last")
    state = work(status, f"{run_dir.name}/eval/{job}")
    if state == "finished":
        atomic_write_json(job_result_path(job_dir), {"kind": command, "test_top1": 0.5, "test_top5": 0.9})
    status.update(state=state)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

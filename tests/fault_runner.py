"""`python -m core` with one fault injected, for tests/test_reliability.py.

    python tests/fault_runner.py FAULT pretrain ...        (also under torchrun)

FAULT is one of:

* ``kill-in-save:N`` -- the N-th checkpoint save writes half of the checkpoint into its temp
  file, fsyncs it, and the process SIGKILLs itself (a crash in the middle of `torch.save`);
* ``kill-rank:R:S`` -- rank R SIGKILLs itself after its S-th optimizer step (a DDP worker
  dying mid-training);
* ``hang-rank:R:S`` -- rank R SIGSTOPs itself after its S-th step (a worker that hangs, or a
  machine that drops off the network: its sockets stay open).
* ``block-in-c:S`` -- after its S-th step the main thread locks a pthread mutex it already
  holds: a deadlock inside a C call that released the GIL and that no signal interrupts
  (as a oneDNN kernel spinning forever, or glibc's ``free`` deadlocked on a corrupt heap).

Rank faults print ``fault_runner: rank R pid P: ... at UNIX_TIME`` to stderr first.

The faults are injected by patching functions of `core` in this process only, so the
production code carries no test hooks.
"""

from __future__ import annotations

import io
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from core.training import checkpoint, trainer

from core import cli

from core.simclr import dist
def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def hang() -> None:
    os.kill(os.getpid(), signal.SIGSTOP)


def kill_in_save(n: int) -> None:
    real_save = torch.save
    calls = {"n": 0}

    def save(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] != n:
            return real_save(obj, f, *args, **kwargs)
        buf = io.BytesIO()
        real_save(obj, buf, *args, **kwargs)
        data = buf.getvalue()
        f.write(data[: len(data) // 2])
        f.flush()
        os.fsync(f.fileno())
        die()

    checkpoint.torch.save = save


def block_in_c() -> None:
    import ctypes
    libc = ctypes.CDLL(None)  # ctypes releases the GIL for the call, as torch's operators do
    mutex = ctypes.create_string_buffer(64)  # zeroed: PTHREAD_MUTEX_INITIALIZER, a normal mutex
    libc.pthread_mutex_lock(mutex)
    libc.pthread_mutex_lock(mutex)  # never returns


def at_rank_step(rank: int, step: int, fault) -> None:
    real_stop_agreed = trainer.stop_agreed
    calls = {"n": 0}

    def stop_agreed(flag, asked):
        calls["n"] += 1
        if calls["n"] == step and dist.get_rank() == rank:
            print(f"fault_runner: rank {rank} pid {os.getpid()}: {fault.__name__} after step {step} "
                  f"at {time.time():.3f}", file=sys.stderr, flush=True)
            fault()
        return real_stop_agreed(flag, asked)

    trainer.stop_agreed = stop_agreed


def main(argv: list[str]) -> int:
    fault, *args = argv
    kind, *params = fault.split(":")
    if kind == "kill-in-save":
        kill_in_save(int(params[0]))
    elif kind == "kill-rank":
        at_rank_step(int(params[0]), int(params[1]), die)
    elif kind == "hang-rank":
        at_rank_step(int(params[0]), int(params[1]), hang)
    elif kind == "block-in-c":
        at_rank_step(0, int(params[0]), block_in_c)
    else:
        raise SystemExit(f"unknown fault {fault!r}")
    return cli.main(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The New-run form's memory estimate, with no torch in the TUI.

A model shape's cost (the bytes its forward saves per view; core.training.memory) is measured
by `python -m core.training.memory --shape ...` in a child process (about the time it takes
to import torch), once per shape while the app runs; everything else is core's arithmetic
on it, and the free memory is core's `available_memory` (nvidia-smi or /proc/meminfo: the TUI
never makes a CUDA context). Call from a worker thread.
"""

from __future__ import annotations

import subprocess
import sys
import threading

from core.config import PretrainConfig
from core.process import error_line
from core.training.memory import Shape, ShapeCost, Verdict, available_memory, memory_verdict

from .child import ChildJob

#: seconds a shape's measurement may take (a few on an idle machine: importing torch)
TIMEOUT = 300.0

_costs: dict[Shape, ShapeCost] = {}
_lock = threading.Lock()


class CostJob(ChildJob):
    """One measurement in flight; `cancel()` (from any thread) kills it."""

    def end(self, proc: subprocess.Popen) -> None:
        proc.kill()  # it only measures: nothing to clean up

    def measure(self, shape: Shape) -> ShapeCost:
        """The shape's cost from a child process; raises RuntimeError with its one line."""
        argv = [sys.executable, "-m", "core.training.memory", "--shape", shape.backbone, str(shape.width),
                str(shape.image_size), str(shape.projection_dim)]
        if not self.spawn(argv):
            raise RuntimeError("superseded")
        done = self.wait(TIMEOUT)
        if done is None:
            raise RuntimeError(f"measuring the model took over {TIMEOUT:.0f} s")
        out, err, code = done
        if self.cancelled:
            raise RuntimeError("superseded")
        if code != 0:
            raise RuntimeError(error_line(err, out) or f"exit code {code}")
        try:
            return ShapeCost.from_json(out.strip().splitlines()[-1])
        except (ValueError, KeyError, TypeError, IndexError):
            raise RuntimeError(f"unreadable answer: {out.strip()[:80]!r}") from None


def shape_cost(shape: Shape, job: CostJob) -> ShapeCost:
    """The shape's cost: measured by ``job`` the first time, then remembered."""
    with _lock:
        if shape in _costs:
            return _costs[shape]
    cost = job.measure(shape)
    with _lock:
        _costs[shape] = cost
    return cost


def is_measured(shape: Shape) -> bool:
    with _lock:
        return shape in _costs


def estimate(config: PretrainConfig, launcher: str, job: CostJob) -> Verdict:
    """The step's estimate against this machine's free memory (a Slurm node's is not known here)."""
    cost = shape_cost(Shape.of(config), job)
    available = (None, "the Slurm node") if launcher == "slurm" else available_memory(config.device)
    return memory_verdict(config, cost, available)

"""How long a run trains: its planned steps, its wall clock, and fitting into --time-budget."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

from core.config import PretrainConfig
from core.training.session import Progress


def plan_steps(cfg: PretrainConfig, steps_per_epoch: int) -> int:
    """Total optimizer steps before any time budget shortens them."""
    if cfg.max_steps is not None:
        return cfg.max_steps
    return max(1, cfg.epochs) * steps_per_epoch


class Clock:
    """Wall time of training, split into optimizer steps and per-epoch overhead (monitor, saving)."""

    def __init__(self, prog: Progress) -> None:
        self.prog = prog
        self.last = time.perf_counter()
        self.step_seconds: list[float] = []
        self.overhead_seconds: list[float] = []

    def step(self) -> None:
        now = time.perf_counter()
        self.step_seconds.append(now - self.last)
        self.prog.train_seconds += now - self.last
        self.last = now

    def images_per_sec(self, batch_size: int, window: int = 20) -> float:
        recent = self.step_seconds[-window:]
        return len(recent) * batch_size / max(sum(recent), 1e-9)

    @contextmanager
    def overhead(self) -> Iterator[None]:
        t0 = time.perf_counter()
        yield
        now = time.perf_counter()
        self.overhead_seconds.append(now - t0)
        self.prog.train_seconds += now - self.last
        self.last = now


def fit_to_budget(cfg: PretrainConfig, prog: Progress, clock: Clock, spe: int) -> None:
    """Fit the schedule into --time-budget minutes, then stop at the deadline regardless.

    The step count is fitted after 10 timed steps and refitted once when the first epoch
    has ended (its monitor and checkpoint cost known); after that the learning-rate curve
    is fixed. A budget already spent ends training at this step.
    """
    budget = cfg.time_budget * 60
    if prog.train_seconds >= budget:
        prog.total_steps = prog.step
        return
    timed = clock.step_seconds[2:]  # the first steps pay one-off start-up costs
    if prog.budget_fixed or len(timed) < 10:
        return
    per_step = sorted(timed)[len(timed) // 2]  # the median resists hiccups
    per_step += (sum(clock.overhead_seconds) / len(clock.overhead_seconds) / spe) if clock.overhead_seconds else 0.0
    fit = prog.step + int((budget - prog.train_seconds) * 0.97 / per_step)
    prog.total_steps = max(prog.step + 1, min(plan_steps(cfg, spe), fit))
    prog.budget_fixed = bool(clock.overhead_seconds) or prog.total_steps <= spe

"""Fixtures for the TUI tests: a runs directory, the fake runner, and waiting helpers."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from core.runs import LIVE_STATES, effective_state, read_json


@pytest.fixture
def runs_dir(tmp_path: Path):
    """A fresh runs directory; any run still alive afterwards is killed (runs outlive apps)."""
    d = tmp_path / "runs"
    d.mkdir()
    yield d
    for status in list(d.glob("*/status.json")) + list(d.glob("*/eval/*/status.json")):
        st = read_json(status)
        try:
            if st and effective_state(st) in LIVE_STATES and st.get("pgid", 0) > 1:
                os.killpg(st["pgid"], signal.SIGKILL)
        except (ProcessLookupError, PermissionError, TypeError, ValueError):
            pass  # gone already, or a deliberately broken status.json


@pytest.fixture
def fast_runs(monkeypatch):
    monkeypatch.setenv("FAKE_STEP_SECONDS", "0.01")
    monkeypatch.setenv("FAKE_STEPS_PER_EPOCH", "5")


@pytest.fixture
def slow_runs(monkeypatch):
    """Runs that stay alive long enough to be stopped (but still log every 50 ms)."""
    monkeypatch.setenv("FAKE_STEP_SECONDS", "0.05")
    monkeypatch.setenv("FAKE_STEPS_PER_EPOCH", "20")

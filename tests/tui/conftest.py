"""Fixtures for the TUI tests: a runs directory, the fake runner, and waiting helpers."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from core.runs import LIVE_STATES, effective_state, read_status


@pytest.fixture(autouse=True)
def half_blocks(monkeypatch):
    """Pictures as colour half blocks, whatever terminal runs the tests (snapshots stay put)."""
    monkeypatch.setenv("SIMCLR_TUI_IMAGES", "halfcell")


@pytest.fixture
def runs_dir(tmp_path: Path):
    """A fresh runs directory; any run still alive afterwards is killed (runs outlive apps)."""
    d = tmp_path / "runs"
    d.mkdir()
    yield d
    for path in list(d.glob("*/status.json")) + list(d.glob("*/eval/*/status.json")):
        status = read_status(path)  # typed: a deliberately broken file reads as None or without a pgid
        if status and status.pgid is not None and status.pgid > 1 and effective_state(status) in LIVE_STATES:
            try:
                os.killpg(status.pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass  # gone already


@pytest.fixture
def fast_runs(monkeypatch):
    monkeypatch.setenv("FAKE_STEP_SECONDS", "0.01")
    monkeypatch.setenv("FAKE_STEPS_PER_EPOCH", "5")


@pytest.fixture
def slow_runs(monkeypatch):
    """Runs that stay alive long enough to be stopped (but still log every 50 ms)."""
    monkeypatch.setenv("FAKE_STEP_SECONDS", "0.05")
    monkeypatch.setenv("FAKE_STEPS_PER_EPOCH", "20")

"""Fixtures shared by the core tests."""

from __future__ import annotations

import os
import urllib.error
import uuid
from pathlib import Path

import pytest

from . import slurm_cluster


def pytest_configure(config):
    """In the controller (or a run without xdist), before any worker starts: a token naming this
    test session, which its workers inherit; the Slurm test cluster records it (slurm_cluster.up)."""
    if not hasattr(config, "workerinput"):
        os.environ[slurm_cluster.SESSION_ENV] = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    # --precision auto stays fp32 on every CPU in the tests (and their subprocess runs): their
    # numbers must not depend on the processor; tests/test_precision.py covers the choice itself
    os.environ.setdefault("SIMCLR_CPU_BF16", "off")


def pytest_unconfigure(config):
    """In the controller, after every worker ended: stop the Slurm daemons this test session
    started, unless another test session still uses them (a cluster running before is left)."""
    if not hasattr(config, "workerinput"):
        slurm_cluster.release(os.environ.get(slurm_cluster.SESSION_ENV))


@pytest.fixture
def offline_cifar10(monkeypatch):
    """torchvision's CIFAR10 on a machine without a network.

    Not in its folder; a download makes the folder, a partial archive and an empty data
    folder, as a connection dropped mid-way would, then fails with URLError.
    """
    import torchvision.datasets as tvd

    class Offline:
        base_folder, filename = tvd.CIFAR10.base_folder, tvd.CIFAR10.filename

        def __init__(self, root, download=False, **kwargs):
            if not download:
                raise RuntimeError("Dataset not found or corrupted.")
            Path(root).mkdir(parents=True, exist_ok=True)
            (Path(root) / self.filename).write_bytes(b"partial")
            (Path(root) / self.base_folder).mkdir()
            raise urllib.error.URLError("no network")

    monkeypatch.setattr(tvd, "CIFAR10", Offline)
    return Offline

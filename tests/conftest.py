"""Fixtures shared by the core tests."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest


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

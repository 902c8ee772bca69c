"""Tables written to files: CSV, markdown and LaTeX (``core.report.tables``) under ``<runs dir>/exports/``.

Each export is one timestamped stem (``compare-20250131-142501``) with one file per format;
a second export in the same second gets ``-2``. Files are written whole to a temporary name
and renamed, so a reader never sees half a table.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

# the tables themselves are core's (``simclr results`` writes the same formats); the screens
# import them from here with the files they go to
from core.report.tables import csv_table, latex_table, markdown_table

__all__ = ["EXPORTS", "csv_table", "export_stem", "latex_table", "markdown_table", "write_files"]

EXPORTS = "exports"


def export_stem(runs_dir: str | Path, what: str, now: float | None = None) -> Path:
    """``<runs dir>/exports/<what>-YYYYmmdd-HHMMSS`` (made), not yet used by any file."""
    folder = Path(runs_dir) / EXPORTS
    folder.mkdir(parents=True, exist_ok=True)
    base = f"{what}-{time.strftime('%Y%m%d-%H%M%S', time.localtime(now))}"
    stem, i = folder / base, 1
    while any(folder.glob(f"{stem.name}.*")):
        i += 1
        stem = folder / f"{base}-{i}"
    return stem


def write_files(stem: Path, texts: dict[str, str]) -> list[Path]:
    """Each text to ``stem.<suffix>`` (suffix: csv, md, tex, ...); returns the paths."""
    paths = []
    for suffix, text in texts.items():
        path = stem.with_name(f"{stem.name}.{suffix}")
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        tmp.write_text(text)
        os.replace(tmp, path)
        paths.append(path)
    return paths

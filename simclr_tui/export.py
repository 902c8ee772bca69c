"""Tables written to files: CSV, markdown and LaTeX under ``<runs dir>/exports/``.

Each export is one timestamped stem (``compare-20250131-142501``) with one file per format;
a second export in the same second gets ``-2``. Files are written whole to a temporary name
and renamed, so a reader never sees half a table.
"""

from __future__ import annotations

import csv
import io
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EXPORTS = "exports"

_LATEX_SPECIAL = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
                  "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}"}


def latex_escape(text: str) -> str:
    return re.sub(r"[&%$#_{}~^\\]", lambda m: _LATEX_SPECIAL[m.group()], text).replace("±", r"$\pm$")


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


def csv_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([[_cell(v) for v in r] for r in rows])
    return out.getvalue()


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def line(cells: Sequence[Any]) -> str:
        return "| " + " | ".join(_cell(c).replace("|", r"\|") for c in cells) + " |"

    return "\n".join([line(header), "|" + "|".join(" --- " for _ in header) + "|", *map(line, rows)]) + "\n"


def latex_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def line(cells: Sequence[Any]) -> str:
        return " & ".join(latex_escape(_cell(c)) for c in cells) + r" \\"

    return "\n".join([r"\begin{tabular}{" + "l" * len(header) + "}", r"\hline", line(header), r"\hline",
                      *map(line, rows), r"\hline", r"\end{tabular}"]) + "\n"


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

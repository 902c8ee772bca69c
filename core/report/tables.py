"""A header and rows of cells as text: CSV, a markdown table or a LaTeX tabular.

A cell is any value; ``None`` is an empty cell. Markdown escapes ``|`` in a cell and LaTeX
its special characters, so any run name or setting survives the trip.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from typing import Any

FORMATS = ("csv", "markdown", "latex")

_LATEX_SPECIAL = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
                  "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}"}


def latex_escape(text: str) -> str:
    return re.sub(r"[&%$#_{}~^\\]", lambda m: _LATEX_SPECIAL[m.group()], text).replace("±", r"$\pm$")


def cell(value: Any) -> str:
    return "" if value is None else str(value)


def csv_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([[cell(v) for v in r] for r in rows])
    return out.getvalue()


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def line(cells: Sequence[Any]) -> str:
        return "| " + " | ".join(cell(c).replace("|", r"\|") for c in cells) + " |"

    return "\n".join([line(header), "|" + "|".join(" --- " for _ in header) + "|", *map(line, rows)]) + "\n"


def latex_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def line(cells: Sequence[Any]) -> str:
        return " & ".join(latex_escape(cell(c)) for c in cells) + r" \\"

    return "\n".join([r"\begin{tabular}{" + "l" * len(header) + "}", r"\hline", line(header), r"\hline",
                      *map(line, rows), r"\hline", r"\end{tabular}"]) + "\n"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str) -> str:
    """The table in one of :data:`FORMATS`."""
    render = {"csv": csv_table, "markdown": markdown_table, "latex": latex_table}.get(fmt)
    if render is None:
        raise ValueError(f"unknown table format {fmt!r}; one of {', '.join(FORMATS)}")
    return render(header, rows)

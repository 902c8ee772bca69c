"""What a person and the sweep say about a run: notes.json (note and tags) and sweep.json."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from core.runs.files import atomic_write_json, number, read_json


def read_sweep(run_dir: Path) -> dict[str, Any] | None:
    """A run's sweep.json as ``{"sweep", "index", "swept", "trial", "setting"}`` (the last two a
    TPE member's Optuna trial and setting number, else None), or None when the run is no
    sweep's (no file, unreadable, no sweep name). A value of the wrong type reads as absent."""
    data = read_json(run_dir / "sweep.json")
    if not data or not isinstance(data.get("sweep"), str) or not data["sweep"]:
        return None
    swept = data.get("swept")
    whole = {k: data.get(k) if isinstance(number(data.get(k)), int) else None for k in ("index", "trial", "setting")}
    return {"sweep": data["sweep"], "swept": swept if isinstance(swept, dict) else {}, **whole}


def read_notes(run_dir: str | Path) -> tuple[str, list[str]]:
    """A run's note and tags (``notes.json``); ``("", [])`` when it has none or the file is unreadable."""
    data = read_json(Path(run_dir) / "notes.json") or {}
    note = data.get("note") if isinstance(data.get("note"), str) else ""
    tags = data.get("tags") if isinstance(data.get("tags"), list) else []
    return note, [t for t in tags if isinstance(t, str) and t]


def clean_tags(tags: list[str] | str) -> list[str]:
    """Tags as a sorted list of unique words (a string is split on commas and spaces)."""
    words = re.split(r"[,\s]+", tags) if isinstance(tags, str) else [str(t).strip() for t in tags]
    return sorted({w for w in words if w})


def write_notes(run_dir: str | Path, note: str | None = None, tags: list[str] | str | None = None) -> None:
    """Set a run's note and/or tags (None keeps what is there); atomic, like every run file."""
    old_note, old_tags = read_notes(run_dir)
    atomic_write_json(Path(run_dir) / "notes.json",
                      {"note": old_note if note is None else note.strip(),
                       "tags": old_tags if tags is None else clean_tags(tags)})

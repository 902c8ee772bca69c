"""Settings: what runs of one setting share, so their seeds can be read as one group.

A run's setting is its config (or a sweep member's swept values) without the keys that do
not define one: the seed, and where and how it ran (the keys a sweep cannot vary).
``simclr results --group-by`` and the TUI's compare and results views group by it.
"""

from __future__ import annotations

import json
from typing import Any

from core.jobs.sweep import UNSWEPT

#: config keys runs of one setting may differ in
NOT_A_SETTING = ("seed", *UNSWEPT)


def setting_of(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` (a config, or swept values) without the keys that do not define a setting."""
    return {k: v for k, v in values.items() if k not in NOT_A_SETTING}


def differing_keys(settings: list[dict[str, Any]]) -> list[str]:
    """Keys whose values are not the same in every setting (absent counts as a value), sorted."""
    keys = sorted({k for s in settings for k in s})
    return [k for k in keys if len({json.dumps(s.get(k, "<absent>"), default=str) for s in settings}) > 1]

"""Small text formatters shared by the screens (pure functions, easy to test)."""

from __future__ import annotations

from rich.text import Text

# state -> Rich style, the same map `simclr runs` uses; the screens style single parts with it
from core.report.states import STATE_STYLES, state_style  # noqa: F401

#: a sweep's group row
GROUP_STYLE = "bold medium_purple1"


def state_text(state: str) -> Text:
    return Text(state, style=state_style(state))


#: a run's health (status.json "health", core.training.health) -> (badge, Rich style); ok is dim
HEALTH = {"ok": ("✓", "dim"), "not learning": ("~", "bold yellow"), "collapsed": ("✗", "bold red"),
          "diverged": ("↯", "bold red")}


def health_badge(health: str | None) -> Text:
    """The Runs table's one-character health column: nothing before a verdict, ``?`` for an unknown one."""
    if not health:
        return Text("")
    badge, style = HEALTH.get(health, ("?", "yellow"))
    return Text(badge, style=style)


def health_style(health: str | None) -> str:
    return HEALTH.get(health or "", ("", "yellow"))[1]


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    s = int(round(seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    if h >= 100:
        return f"{h / 24:.0f}d"
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def percent(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def number(x: float | None, digits: int = 4) -> str:
    if x is None:
        return "–"
    if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e5):
        return f"{x:.2e}"
    return f"{x:.{digits}g}"


def throughput(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x / 1000:.1f}k" if x >= 10000 else f"{x:.0f}"


def bar(fraction: float | None, width: int = 8) -> str:
    if fraction is None:
        return " " * width
    filled = fraction * width
    full = int(filled)
    parts = " ▏▎▍▌▋▊▉"
    rest = parts[int((filled - full) * 8)] if full < width else ""
    return ("█" * full + rest).ljust(width, "·")[:width]


def progress(epoch: float | None, total: float | None) -> str:
    if epoch is None:
        return "–"
    e = f"{epoch:g}" if epoch == int(epoch) else f"{epoch:.1f}"
    return f"{e}/{total:g}" if total else e


def queue_place(position: int | None) -> str:
    """A queued run's place: ``queued #3``; one a worker already started: ``starting…``."""
    return f"queued #{position}" if position is not None else "starting…"


def slurm_place(job_id: str, slurm_reason: str | None) -> str:
    """A run waiting in Slurm: ``job 123 Priority`` (Slurm's pending reason, cut to a word)."""
    reason = (slurm_reason or "").split(",")[0]
    return f"job {job_id}" + (f" {reason[:12]}" if reason else "")


def tags(values: tuple[str, ...] | list[str]) -> str:
    return ", ".join(values)

"""The New-run form's memory line: what one training step will need at the form's batch and
micro-batch, against the free memory of the device it will run on.

Worked out 0.4 s after the last change of a field it depends on (`DEPENDS`), in a thread
(`simclr_tui.memory`: a model shape is measured once, in a child process; the free memory
comes from nvidia-smi or /proc/meminfo). When the step will not fit, the line is a warning
that names the largest micro-batch that fits, and Launch (or Queue) asks for a second press
within `CONFIRM_S` seconds before it goes ahead (`holds`).
"""

from __future__ import annotations

import time

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Label, Static

from core.config import PretrainConfig
from core.training.memory import Shape, Verdict, fmt_bytes

from .. import memory

#: the config fields the estimate depends on
DEPENDS = ("backbone", "width", "image_size", "projection_dim", "batch_size", "micro_batch", "device", "optimizer",
           "ema", "precision")
#: seconds after the last change before the estimate is made
DEBOUNCE = 0.4
#: seconds within which a second Launch press goes ahead despite the warning
CONFIRM_S = 6.0


def parts(verdict: Verdict) -> str:
    """The estimate's parts, short (the tooltip has the long form, `Estimate.how`)."""
    e = verdict.estimate
    heap = f" · heap {fmt_bytes(e.heap)}" if e.heap else ""
    return f"model {fmt_bytes(e.model)} · activations {fmt_bytes(e.activations)} · views {fmt_bytes(e.inputs)}{heap}"


class MemoryLine(Horizontal):
    """`memory` and two lines: the verdict, then its parts (or the warning, wrapped); the
    tooltip says what was counted and that it is an estimate."""

    DEFAULT_CSS = """
    MemoryLine {
        height: 2;
        padding: 0 1;
    }
    MemoryLine .field-label {
        width: 20;
        padding: 0 1 0 0;
        color: $text-muted;
    }
    MemoryLine #memory-text {
        width: 1fr;
        height: 2;
        color: $text-muted;
    }
    MemoryLine.-warning #memory-text {
        color: $warning;
        text-style: bold;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.wanted: tuple | None = None  # what the line is (to be) about
        self.verdict: Verdict | None = None  # the estimate of `wanted`, once made
        self.error = ""
        self.text = ""  # what the line shows
        self._timer = None
        self._job: memory.CostJob | None = None
        self._asked_at: float | None = None  # when a launch was held for `wanted`
        self._confirmed: tuple | None = None  # `wanted` after a second press: launches go ahead

    def compose(self) -> ComposeResult:
        yield Label("memory", classes="field-label")
        yield Static("", id="memory-text", markup=False)

    def on_unmount(self) -> None:
        if self._job is not None:
            self._job.cancel()

    def _say(self, text: str, warning: bool = False, tip: str | None = None) -> None:
        self.text = text
        shown = self.query_one("#memory-text", Static)
        shown.update(text)
        shown.tooltip = tip
        self.set_class(warning, "-warning")

    # .................................................................. the estimate
    def show_config(self, config: PretrainConfig | None, launcher: str) -> None:
        """The form changed (``config`` None: it has an error, and the line hides)."""
        self.display = config is not None
        if config is None:
            self.wanted = None
            self._stop()
            return
        wanted = (*(getattr(config, name) for name in DEPENDS), launcher)
        if wanted == self.wanted:
            return
        self._stop()
        self.wanted, self.verdict, self.error, self._asked_at = wanted, None, "", None
        shape = Shape.of(config)
        once = "" if memory.is_measured(shape) else f" (measuring {shape.backbone} width {shape.width} at " \
                                                       f"{shape.image_size} px once)"
        self._say(f"estimating{once}…")
        self._timer = self.set_timer(DEBOUNCE, lambda: self._start(config, launcher, wanted))

    def _stop(self) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        if self._job is not None:
            self._job.cancel()
            self._job = None

    def _start(self, config: PretrainConfig, launcher: str, wanted: tuple) -> None:
        self._timer = None
        if wanted != self.wanted or not self.is_mounted:
            return
        job = self._job = memory.CostJob()

        def work() -> None:
            try:
                verdict, error = memory.estimate(config, launcher, job), ""
            except Exception as e:  # noqa: BLE001 - the estimate is advice: say why there is none
                verdict, error = None, str(e) or type(e).__name__
            if not job.cancelled:
                self.app.call_from_thread(self._done, wanted, verdict, error)

        self.run_worker(work, thread=True, group="memory", name="memory estimate", exit_on_error=False)

    def _done(self, wanted: tuple, verdict: Verdict | None, error: str) -> None:
        if wanted != self.wanted or not self.is_mounted:
            return
        self._job = None
        self.verdict, self.error = verdict, error
        if verdict is None:
            self._say(f"no estimate: {error}")
        elif verdict.fits is False:
            self._say(f"⚠ {verdict.text}", warning=True, tip=f"{parts(verdict)}\n{verdict.estimate.how}")
        else:
            self._say(f"{verdict.text}\n{parts(verdict)}", tip=verdict.estimate.how)

    # .................................................................. launching
    def holds(self, action: str) -> bool:
        """Whether a launch should wait: the step will not fit and nobody has confirmed it. The
        first press warns (a notification) and holds; a second within CONFIRM_S goes ahead."""
        v = self.verdict
        if v is None or v.fits is not False or self._confirmed == self.wanted:
            return False
        now = time.monotonic()
        if self._asked_at is not None and now - self._asked_at <= CONFIRM_S:
            self._confirmed, self._asked_at = self.wanted, None
            return False
        self._asked_at = now
        fix = f"set micro-batch to {v.micro}" if v.micro else "lower the width or the image size"
        self.app.notify(f"{v.text}.\nPress {action} again within {CONFIRM_S:.0f} s to {action.lower()} anyway, "
                        f"or {fix}.", title="Memory: the step will not fit", severity="warning", timeout=CONFIRM_S)
        return True

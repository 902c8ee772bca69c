"""The New-run form's Views panel: what the augmentation does to a few training images.

Redrawn 0.5 s after the last change of a field that changes the views (the data, image
size, colour jitter, blur, and any crop or grayscale setting), by `python -m core views
<those flags> --n 4 --views 4 --seed 0`, cached under RUNS/.tui-cache/ by its arguments; a
change of any other field (lr, epochs, ...) draws nothing.
"""

from __future__ import annotations

from core.config import PretrainConfig

from ..pictures import cache_path, form_views_args
from .picture import Picture

#: seconds after the last change before the views are drawn
DEBOUNCE = 0.5


def caption(config: PretrainConfig) -> str:
    blur = "on" if config.use_blur else "off"
    return (f"Views: {config.dataset} at {config.image_size} px, jitter {config.jitter_strength:g}, blur {blur}"
            f" · 4 images × 4 views, seed 0")


class ViewsPanel(Picture):
    DEFAULT_CSS = """
    ViewsPanel {
        margin: 1 0 0 0;
    }
    ViewsPanel > .picture-area {
        height: 20;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.wanted: list[str] | None = None  # the arguments of the last config seen
        self._timer = None

    @property
    def busy(self) -> bool:
        return self._timer is not None or super().busy

    def show_config(self, config: PretrainConfig | None) -> None:
        """The form's config changed (None: it has an error); draw its views soon."""
        if config is None:
            if self._timer is not None:
                self._timer.stop()
            if self.wanted is not None:
                self.cancel()
                self.say("Views: fix the form's error to see them", "dim")
            self.wanted = None
            return
        args = form_views_args(config)
        if args == self.wanted:
            return
        self.wanted = args
        if self.cannot_draw():
            return
        if self._timer is not None:
            self._timer.stop()
        self.say(f"{caption(config)} · waiting for the fields to settle…", "italic")
        self._timer = self.set_timer(DEBOUNCE, lambda: self._draw(config, args))

    def _draw(self, config: PretrainConfig, args: list[str]) -> None:
        self._timer = None
        if args == self.wanted and self.is_mounted:
            self.request(args, cache_path(self.app.runs_dir, "views", args), caption(config),
                         waiting="drawing them (simclr views)…")

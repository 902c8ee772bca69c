"""A picture made by a `python -m core` command, drawn with textual-image.

`Picture.request(args, out)` runs the command in a thread worker (never on the event loop)
and shows a placeholder line until the file is there; a newer request supersedes an older
one (its process is killed, its result dropped: only the newest is shown). An error is
shown as the command's one line. Where the terminal cannot draw images the widget is that
one line and runs nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Container, Vertical
from textual.widget import Widget
from textual.widgets import Static

from ..pictures import IMAGES_ENV, Made, PictureJob, image_support

IMAGE_WIDGETS: dict[str, type[Widget]] = {}
# imported before Textual starts (textual-image asks the terminal about graphics then), except
# with SIMCLR_TUI_IMAGES=none: then the terminal is not even asked
if image_support({IMAGES_ENV: os.environ.get(IMAGES_ENV, "auto")}).ok:
    try:
        from textual_image.widget import HalfcellImage, SixelImage, TGPImage

        IMAGE_WIDGETS = {"kitty": TGPImage, "sixel": SixelImage, "halfcell": HalfcellImage}
    except ImportError:  # the panels say so in one line (_show)
        pass


class Picture(Vertical):
    """One line (what is shown, or why not), then the image."""

    DEFAULT_CSS = """
    Picture {
        height: auto;
    }
    Picture > .picture-line {
        height: auto;
        color: $text-muted;
        padding: 0 1;
    }
    Picture > .picture-area {
        height: 14;
        padding: 0 1;
    }
    Picture .picture-image {
        width: auto;
        height: 1fr;
    }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.generation = 0  # requests so far; a result of an older one is dropped
        self.shown: Path | None = None  # the image on screen
        self.text = ""  # the line above it
        self.error = ""  # the last command's error, when it failed
        self.requests: list[list[str]] = []  # every command asked for (newest last)
        self._job: PictureJob | None = None
        self._image: Widget | None = None

    def compose(self) -> ComposeResult:
        yield Static("", classes="picture-line", markup=False)
        yield Container(classes="picture-area")  # its height is kept while a picture is drawn

    def on_unmount(self) -> None:
        if self._job is not None:
            self._job.cancel()

    @property
    def busy(self) -> bool:
        """A request is waiting or being drawn."""
        return self._job is not None

    # .................................................................. what is shown
    def say(self, text: str, style: str = "") -> None:
        self.text = text
        self.query_one(".picture-line", Static).update(Text(text, style=style))

    def _show(self, path: Path | None, area: bool = True) -> None:
        """Show the image at ``path``; None: none (``area``: keep its room, for the next one)."""
        self.shown = path
        self.query_one(".picture-area").display = area
        if path is None:
            if self._image is not None:
                self._image.display = False
            return
        mode = image_support().mode
        cls = IMAGE_WIDGETS.get(mode)
        if cls is None:  # textual-image is there but its widgets could not be imported (or were not, at start)
            self.say(f"this terminal cannot draw images (textual-image's {mode} widget is not available); "
                     f"the rest of the app works without them", "yellow")
            return
        if self._image is not None and type(self._image) is cls:
            self._image.image = path  # type: ignore[attr-defined]
            self._image.display = True
            return
        if self._image is not None:
            self._image.remove()
        self._image = cls(path, classes="picture-image")  # type: ignore[call-arg]
        self.query_one(".picture-area").mount(self._image)

    # .................................................................. requests
    def cannot_draw(self) -> bool:
        """Say so (one line) and show nothing when this terminal cannot draw images."""
        support = image_support()
        if not support.ok:
            self.cancel()
            self._show(None, area=False)
            self.say(support.line(), "yellow")
        return not support.ok

    def cancel(self) -> None:
        """Drop the request in flight (its process is killed)."""
        self.generation += 1
        if self._job is not None:
            self._job.cancel()
            self._job = None

    def request(self, args: list[str], out: Path, caption: str, waiting: str = "drawing…") -> None:
        """Show ``out``, made by `core args --out ...` unless it is cached already."""
        if self.cannot_draw():
            return
        self.cancel()
        generation = self.generation
        self.requests.append(list(args))
        if out.exists():
            self.error = ""
            self.say(caption)
            self._show(out)
            return
        self.say(f"{caption} · {waiting}", "italic")
        job = self._job = PictureJob()
        program = list(self.app.launcher.runner)

        def work() -> None:  # thread
            made = job.run(program, args, out)
            self.app.call_from_thread(self._made, generation, made, caption)

        self.run_worker(work, thread=True, group="picture", name=f"simclr {args[0]}", exit_on_error=False)

    def _made(self, generation: int, made: Made, caption: str) -> None:
        if generation != self.generation or not self.is_mounted:
            return  # superseded: a newer request is in flight or shown
        self._job = None
        if made.path is None:
            self.error = made.error
            self._show(None, area=False)
            self.say(f"✗ {made.error}", "red")
            return
        self.error = ""
        self.say(caption)
        self._show(made.path)

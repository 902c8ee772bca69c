"""The embedding map of a run: its test features in 2-D (PCA), one colour per class, drawn
with textual-plotext in braille (text: works in every terminal, images or not).

`EmbeddingView.load(run_key)` reads the run's map (RUN/features/map-last.npz) or, when it is
missing or older than the last checkpoint, has `python -m core embed --run-dir RUN` make it,
in a thread worker, and reads it there too (numpy; never torch).
"""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual.app import ComposeResult, RenderResult
from textual.containers import Vertical
from textual.widgets import Static
from textual_plotext import PlotextPlot

from ..pictures import (EmbeddingMap, Made, PictureJob, embed_map_args, map_is_fresh, map_path, picture_device,
                        read_map)

#: one colour per class (plotext names, then RGB): ten classes never share one
CLASS_COLOURS: tuple[str | tuple[int, int, int], ...] = (
    "cyan", "orange", "green", "magenta", "yellow", "blue", "red", "white", (150, 100, 255), (255, 150, 180),
    (120, 200, 120), (200, 170, 110))


class MapPlot(PlotextPlot):
    """A scatter of an `EmbeddingMap`, one colour per class (the 12 largest classes)."""

    DEFAULT_CSS = """
    MapPlot {
        height: 1fr;
        min-height: 8;
    }
    """

    def __init__(self, title: str = "embedding map", *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.title = title
        self.map: EmbeddingMap | None = None

    def set_map(self, emap: EmbeddingMap | None, title: str | None = None) -> None:
        self.map = emap
        if title is not None:
            self.title = title
        self.refresh()

    def render(self) -> RenderResult:
        if self.map is None or self.size.width < 10 or self.size.height < 4:
            return Text(self.title, style="dim", justify="center")
        plt = self.plt
        plt.clear_data()
        plt.title(self.title)
        plt.xlabel("PC 1")
        groups = self.map.by_class(len(CLASS_COLOURS))
        for i, (name, xy) in enumerate(groups):
            plt.scatter(xy[:, 0].tolist(), xy[:, 1].tolist(), marker="braille", color=CLASS_COLOURS[i],
                        label=name if len(groups) > 1 else None)
        return super().render()


class EmbeddingView(Vertical):
    """A line saying what the map is (or why there is none), then the map."""

    DEFAULT_CSS = """
    EmbeddingView {
        height: 1fr;
    }
    EmbeddingView > .map-line {
        height: auto;
        padding: 0 1;
        color: $text-muted;
    }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.generation = 0
        self.key: str | None = None
        self.text = ""
        self._job: PictureJob | None = None

    def compose(self) -> ComposeResult:
        yield Static("", classes="map-line", markup=False)
        yield MapPlot()

    def on_unmount(self) -> None:
        if self._job is not None:
            self._job.cancel()

    def say(self, text: str, style: str = "") -> None:
        self.text = text
        self.query_one(".map-line", Static).update(Text(text, style=style))

    def load(self, key: str, again: bool = False) -> None:
        """The map of run ``key``, made again when missing or older than the run's last
        checkpoint (also after a failure: opening the tab again retries); ``again``: always."""
        run_dir = self.app.runs_dir / key
        out = map_path(self.app.runs_dir, key)
        if key == self.key and not again and (self._job is not None or map_is_fresh(out, run_dir)):
            return  # being made, or shown and current
        self.key = key
        self.generation += 1
        if self._job is not None:
            self._job.cancel()
        generation = self.generation
        job = self._job = PictureJob()
        program = list(self.app.launcher.runner)
        device = picture_device(self.app.runs.values())
        name = key.rsplit("/", 1)[-1]
        fresh = map_is_fresh(out, run_dir)
        self.say(f"{name}: reading its map…" if fresh else f"{name}: embedding its test split (simclr embed)…",
                 "italic")

        def work() -> None:  # thread
            made = job.run(program, embed_map_args(run_dir, device), out, reuse=fresh, pass_out=False)
            emap, error = None, made.error
            if made.path is not None:
                try:
                    emap = read_map(made.path)
                except ValueError as e:
                    emap, error = None, str(e)
            self.app.call_from_thread(self._loaded, generation, name, made, emap, error)

        self.run_worker(work, thread=True, group="picture", name="simclr embed", exit_on_error=False)

    def _loaded(self, generation: int, name: str, made: Made, emap: EmbeddingMap | None, error: str) -> None:
        if generation != self.generation or not self.is_mounted:
            return
        self._job = None
        plot = self.query_one(MapPlot)
        if emap is None:
            plot.set_map(None, "no map")
            self.say(f"{name}: ✗ {error}", "red")
            return
        classes = len(emap.by_class(len(CLASS_COLOURS)))
        plot.set_map(emap, f"{name}: {len(emap.xy)} test images, PCA")
        self.say(f"{name}: {len(emap.xy)} points, {classes} classes · {Path(made.path or '').name}")

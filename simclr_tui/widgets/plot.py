"""A line plot of one or more metric series, drawn with textual-plotext in braille."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.app import RenderResult
from textual_plotext import PlotextPlot

from ..series import resample

#: line colours in plotext's names, in the order lines are added
COLOURS = ("cyan", "orange", "green", "magenta", "yellow", "blue", "red", "white")
#: the same colours darker, for the lines around a mean (mean ± std): plotext ignores styles
#: such as dim in braille, so the band is drawn in these RGB shades
DIM_COLOURS = {"cyan": (0, 105, 115), "orange": (140, 85, 0), "green": (0, 110, 0), "magenta": (110, 0, 110),
               "yellow": (120, 120, 0), "blue": (20, 40, 140), "red": (130, 0, 0), "white": (120, 120, 120)}


@dataclass(frozen=True)
class Line:
    label: str
    xs: tuple[float, ...]
    ys: tuple[float, ...]
    colour: str | None = None
    dim: bool = False  # a thinner companion line (mean ± std): darker, never in the legend


class MetricPlot(PlotextPlot):
    """Plots `Line`s; redraws only when `set_lines` gets different data.

    Points are averaged down to twice the widget's width (braille has two dots per
    cell), so drawing costs the same for 100 or 100,000 logged steps.
    """

    DEFAULT_CSS = """
    MetricPlot {
        height: 1fr;
        min-height: 6;
    }
    """

    def __init__(self, title: str, *, xlabel: str = "epoch", empty: str = "no data yet", id: str | None = None,
                 classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.title = title
        self.xlabel = xlabel
        self.empty = empty
        self.lines: tuple[Line, ...] = ()

    def set_lines(self, lines: list[Line] | tuple[Line, ...]) -> None:
        lines = tuple(ln for ln in lines if ln.ys)
        if lines != self.lines:
            self.lines = lines
            self.refresh()

    def render(self) -> RenderResult:
        if not self.lines or self.size.width < 10 or self.size.height < 4:
            return Text(f"{self.title}\n{self.empty}", style="dim", justify="center")
        plt = self.plt
        plt.clear_data()
        plt.title(self.title)
        plt.xlabel(self.xlabel)
        n = max(2, 2 * self.size.width)
        labelled = sum(not ln.dim for ln in self.lines) > 1
        drawn = [(line, resample(line.xs, n), resample(line.ys, n)) for line in self.lines]
        lo = min(min(ys) for _, _, ys in drawn)
        hi = max(max(ys) for _, _, ys in drawn)
        pad = 0.0 if hi - lo > 1e-12 else max(abs(lo) * 0.05, 1e-6)  # a flat line gets a sensible axis
        plt.ylim(lo - pad, hi + pad)
        for i, (line, xs, ys) in enumerate(drawn):
            colour = line.colour or COLOURS[i % len(COLOURS)]
            if line.dim:
                colour = DIM_COLOURS.get(colour, colour)
            plt.plot(xs, ys, marker="braille", color=colour,
                     label=line.label if labelled and not line.dim and line.label else None)
        return super().render()

"""Pictures made by `python -m core` and shown in the terminal: augmented views, nearest
neighbours, the embedding map.

The TUI never computes them itself (no torch here): each is a short `core` command run in a
worker thread. PNGs go to RUNS/.tui-cache/, named by a hash of their arguments (and of the
files they depend on), where the next request with the same arguments finds them; the map is
`simclr embed`'s own RUN/features/map-last.npz (docs/RUN_DIRECTORY.md), made again once the
run has a newer checkpoint. Every command line is built by one function below, so a change in
core's flags is a change in one place.

Drawing in the terminal (`image_support`): textual-image picks kitty's graphics protocol or
Sixel where the terminal answers for them, else colour half blocks (work inside tmux and
over SSH). SIMCLR_TUI_IMAGES=auto|kitty|sixel|halfcell|none overrides it; `none` (or a
terminal that cannot draw colour, or no textual-image) leaves one line where a picture would
be, and everything else works as before.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.config import PretrainConfig
from core.process import error_line
from core.report.embedding_map import map_file
from core.report.embedding_map import read_map as core_read_map

from .child import ChildJob
from .configform import GROUPS, to_text

IMAGES_ENV = "SIMCLR_TUI_IMAGES"
MODES = ("auto", "kitty", "sixel", "halfcell", "none")
CACHE = ".tui-cache"  # under the runs directory (listed by nothing: it holds no status.json)
#: seconds a picture command may take (a views grid: ~5 s, mostly importing torch; the first
#: neighbours or map of a large dataset encodes it, once, into the run's features cache)
TIMEOUT = 1800.0
#: the config fields that change the augmented views: the Augmentation group of the form,
#: the data and the image size, and crop or grayscale settings wherever they are listed
VIEW_FIELDS_BASE = ("dataset", "data_dir", "subset", "image_size")


@dataclass(frozen=True)
class ImageSupport:
    mode: str  # kitty, sixel, halfcell or none
    reason: str = ""  # why none

    @property
    def ok(self) -> bool:
        return self.mode != "none"

    def line(self) -> str:
        """The one line shown where a picture would be, when none can be drawn."""
        return f"this terminal cannot draw images ({self.reason}); the rest of the app works without them"


def _auto_mode() -> str:
    """What textual-image found when it was imported (it asks the terminal then, before Textual
    starts): kitty, sixel, else half blocks (also when stdout is not a terminal)."""
    from textual_image import renderable

    name = getattr(renderable.Image, "__module__", "")
    return "kitty" if name.endswith(".tgp") else "sixel" if name.endswith(".sixel") else "halfcell"


def image_support(env: dict[str, str] | None = None) -> ImageSupport:
    """How pictures are drawn here (read each time: cheap, and tests set the variable)."""
    env = os.environ if env is None else env
    wanted = env.get(IMAGES_ENV, "auto").strip().lower() or "auto"
    if wanted in ("none", "off", "0", "no"):
        return ImageSupport("none", f"{IMAGES_ENV}={env.get(IMAGES_ENV)}")
    if wanted not in MODES:
        return ImageSupport("none", f"{IMAGES_ENV}={wanted!r} is not one of {', '.join(MODES)}")
    try:
        import textual_image  # noqa: F401
    except ImportError:
        return ImageSupport("none", "textual-image is not installed: pip install textual-image")
    if wanted != "auto":
        return ImageSupport(wanted)
    if env.get("TERM", "") == "dumb":
        return ImageSupport("none", "TERM=dumb")
    if env.get("NO_COLOR"):
        return ImageSupport("none", "NO_COLOR is set, and half blocks need colour")
    return ImageSupport(_auto_mode())


# ...................................................................... the commands
def view_fields() -> tuple[str, ...]:
    names = {f for f in PretrainConfig().to_dict()}
    extra = [n for n in sorted(names) if re.search(r"crop|gray|grey|flip", n)]
    wanted = [*VIEW_FIELDS_BASE, *GROUPS["Augmentation"], *extra]
    return tuple(dict.fromkeys(n for n in wanted if n in names))


def view_flags(config: PretrainConfig) -> list[str]:
    """The config flags that change what the views look like, every one given (so the cache
    key is these values, whatever the preset)."""
    out = []
    for name in view_fields():
        value = getattr(config, name)
        out += ["--" + name.replace("_", "-"), to_text(value) if value is not None else "none"]
    return out


def form_views_args(config: PretrainConfig) -> list[str]:
    """`views` for the New-run form: 4 images x 4 views, seed 0 (the same pictures each time,
    so only the changed setting changes them)."""
    return ["views", *view_flags(config), "--n", "4", "--views", "4", "--seed", "0"]


def run_views_args(run_dir: Path) -> list[str]:
    return ["views", "--config", str(run_dir / "config.json"), "--n", "6", "--views", "4"]


def picture_device(views) -> str:
    """Where a picture's features are computed: on the CPU while a run trains on this machine
    (a picture must never take a training run's GPU memory), else wherever core picks."""
    return "cpu" if any(getattr(v, "state", None) in ("starting", "running") for v in views) else "auto"


def neighbours_args(run_dir: Path, seed: int, device: str = "auto") -> list[str]:
    return ["neighbours", "--run-dir", str(run_dir), "--queries", "6", "--k", "6", "--seed", str(seed),
            "--device", device]


def embed_map_args(run_dir: Path, device: str = "auto") -> list[str]:
    """The run's test split embedded, with its 2-D map; written to `map_path` by core itself."""
    return ["embed", "--run-dir", str(run_dir), "--split", "test", "--checkpoint", "last", "--device", device]


def cache_path(runs_dir: Path, stem: str, args: list[str], depends: tuple[Path, ...] = (), suffix: str = ".png") -> Path:
    """RUNS/.tui-cache/STEM-HASH.SUFFIX: the hash of the arguments and of the size and mtime of
    the files the picture depends on (a run's config.json, its last checkpoint)."""
    h = hashlib.sha1("\0".join(args).encode())
    for p in depends:
        try:
            st = p.stat()
            h.update(f"\0{p}:{st.st_size}:{st.st_mtime_ns}".encode())
        except OSError:
            h.update(f"\0{p}:missing".encode())
    return Path(runs_dir) / CACHE / f"{stem}-{h.hexdigest()[:16]}{suffix}"


# ...................................................................... running one
@dataclass(frozen=True)
class Made:
    """A finished picture command: the file, or the command's one-line error."""

    path: Path | None
    error: str = ""
    cached: bool = False


class PictureJob(ChildJob):
    """One picture command in flight; `cancel()` (from any thread) ends it early."""

    def run(self, program: list[str], args: list[str], out: Path, timeout: float = TIMEOUT, *,
            reuse: bool = True, pass_out: bool = True) -> Made:
        """Run `program args --out TMP` and move TMP to ``out`` when it exits 0; call from a
        thread. ``reuse``: an existing ``out`` is the answer; without ``pass_out`` the command
        writes ``out`` itself (its own default: `simclr embed`'s map in the run's features/)."""
        if reuse and out.exists():
            return Made(out, cached=True)
        tmp = out.with_name(f"tmp-{os.getpid()}-{threading.get_ident()}-{out.name}") if pass_out else out
        if pass_out:
            try:
                out.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                return Made(None, f"cannot create {out.parent}: {e.strerror or e}")
        argv = [*program, *args, "--out", str(tmp)] if pass_out else [*program, *args]
        try:
            if not self.spawn(argv):
                return Made(None, "superseded")
        except OSError as e:
            return Made(None, f"cannot start {program[0]}: {e.strerror or e}")
        done = self.wait(timeout)
        if done is None:
            return Made(None, f"`simclr {args[0]}` did not finish within {timeout:.0f} s")
        stdout, stderr, code = done
        if self.cancelled:
            if pass_out:
                tmp.unlink(missing_ok=True)
            return Made(None, "superseded")
        if code != 0 or not tmp.exists():
            if pass_out:
                tmp.unlink(missing_ok=True)
            line = error_line(stderr, stdout) or (f"`simclr {args[0]}` exited with code {code}" if code
                                                  else f"`simclr {args[0]}` wrote no {tmp.suffix} file")
            return Made(None, line.strip().splitlines()[-1] if line.strip() else line)
        if pass_out:
            os.replace(tmp, out)
        return Made(out)


# ...................................................................... the embedding map
def map_path(runs_dir: Path, key: str) -> Path:
    """Where `simclr embed --run-dir RUN` keeps the map of run ``key``: RUN/features/map-last.npz
    (core's `map_file`, docs/RUN_DIRECTORY.md); stale once the last checkpoint is newer."""
    return map_file(Path(runs_dir) / key, "last", "test")


def map_is_fresh(path: Path, run_dir: Path) -> bool:
    """The map was made from the run's current last.pt: the checkpoint stamp `simclr embed`
    records in it (size and mtime_ns) is the file's now. A map without one (older) is fresh
    when it is newer than the checkpoint."""
    try:
        made = path.stat().st_mtime
    except OSError:
        return False
    try:
        st = (run_dir / "checkpoints" / "last.pt").stat()
    except OSError:
        return True  # no checkpoint to be newer than it
    try:
        with np.load(path) as data:
            if "checkpoint_stamp" in data.files:
                return [int(v) for v in data["checkpoint_stamp"]] == [st.st_size, st.st_mtime_ns]
    except (OSError, ValueError):
        return False
    return made >= st.st_mtime


@dataclass(frozen=True)
class EmbeddingMap:
    """Points of a 2-D map of a run's embedding, with their class names."""

    xy: np.ndarray  # (N, 2)
    labels: np.ndarray  # (N,) ints, -1 unlabelled
    classes: tuple[str, ...]

    def by_class(self, limit: int = 12) -> list[tuple[str, np.ndarray]]:
        """(class name, its points) for the ``limit`` most frequent labels, in label order."""
        found, counts = np.unique(self.labels, return_counts=True)
        order = found[np.argsort(-counts, kind="stable")][:limit]
        out = []
        for label in sorted(order.tolist()):
            name = self.classes[label] if 0 <= label < len(self.classes) else ("unlabelled" if label < 0 else str(label))
            out.append((name, self.xy[self.labels == label]))
        return out


def read_map(path: Path, max_points: int = 4000) -> EmbeddingMap:
    """The map in an .npz of `simclr embed` (core.report.embedding_map.read_map: its `pca_2d`, or
    `features` projected), at most ``max_points`` of it (a fixed sample: more adds nothing in
    braille). Raises ValueError with a one-line reason."""
    try:
        m = core_read_map(path)
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"cannot read {Path(path).name}: {e}") from None
    xy, labels = np.asarray(m.xy, dtype=np.float64), np.asarray(m.labels, dtype=np.int64)
    if len(xy) > max_points:
        keep = np.sort(np.random.default_rng(0).choice(len(xy), max_points, replace=False))
        xy, labels = xy[keep], labels[keep]
    return EmbeddingMap(xy, labels, tuple(m.classes))

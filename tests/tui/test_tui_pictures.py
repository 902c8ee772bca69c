"""Pictures in the TUI (issue 23): the New-run form's Views panel, Run detail's Views,
Neighbours and Embedding tabs, and Compare's maps side by side.

The commands are the fake runner's (tests/tui/fake_pictures.py: a PNG whose colours follow
its arguments, an .npz of three clusters), so nothing here waits on torch; one test runs the
real `python -m core views` on preset tiny, skipped until core has that command.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import time
from pathlib import Path

import numpy as np
import pytest
from textual.widgets import Input
from tui_helpers import FAKE_RUNNER, wait_for, wait_screen, wait_text

from tests.helpers import make_run

from core.config import PretrainConfig, preset
from simclr_tui.app import make_app
from simclr_tui.pictures import IMAGES_ENV, map_path, read_map
from simclr_tui.screens.compare import CompareScreen
from simclr_tui.screens.detail import RunDetailScreen
from simclr_tui.screens.new_run import NewRunScreen
from simclr_tui.widgets.embedding_map import EmbeddingView, MapPlot
from simclr_tui.widgets.picture import Picture
from simclr_tui.widgets.views_panel import ViewsPanel

pytestmark = pytest.mark.asyncio
SIZE = (120, 40)


@pytest.fixture
def pictures(tmp_path, monkeypatch):
    """Half blocks (what tmux and SSH get), and the file where the fake runner logs its commands."""
    log = tmp_path / "pictures.log"
    monkeypatch.setenv(IMAGES_ENV, "halfcell")
    monkeypatch.setenv("FAKE_PICTURE_LOG", str(log))
    monkeypatch.delenv("FAKE_PICTURE_SECONDS", raising=False)
    monkeypatch.delenv("FAKE_PICTURE_ERROR", raising=False)
    return log


def commands(log: Path, name: str) -> list[list[str]]:
    if not log.exists():
        return []
    return [c for c in (json.loads(line) for line in log.read_text().splitlines()) if c[0] == name]


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def finished_run(runs: Path, name: str) -> str:
    make_run(runs, name, config=PretrainConfig.from_dict(preset("tiny")).to_dict(), checkpoints=("last",),
             kind="pretrain", state="finished", pid=0, pgid=0, start_time=None, host=socket.gethostname(),
             epoch=2, total_epochs=2, step=16, total_steps=16, error=None)
    return name


def hand_made_map(runs: Path, key: str, offset: float = 0.0) -> np.ndarray:
    """The .npz the core command would write (features, labels, classes), where the TUI looks."""
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(4), 25)
    features = rng.normal(size=(100, 8)) + 5 * np.eye(8)[labels] + offset
    out = map_path(runs, key)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "wb") as f:
        np.savez(f, features=features, labels=labels, classes=np.array(["plane", "car", "bird", "frog"]))
    return features


async def open_form(pilot) -> ViewsPanel:
    await pilot.press("n")
    form = await wait_screen(pilot, NewRunScreen, "#views-panel")
    form.query_one("#preset").value = "tiny"
    panel = form.query_one(ViewsPanel)
    panel.scroll_visible(animate=False)
    return panel


async def test_views_panel_redraws_when_a_field_changes(runs_dir, pictures):
    app = make_app(runs_dir, runner=FAKE_RUNNER, poll_interval=0.1)
    async with app.run_test(size=SIZE) as pilot:
        panel = await open_form(pilot)
        await wait_for(pilot, lambda: not panel.busy and "synthetic at 16 px, jitter 0.5" in panel.text,
                       what="the first views")
        first = panel.shown
        assert first.parent == runs_dir / ".tui-cache" and first.suffix == ".png"
        argv = commands(pictures, "views")[-1]  # (the form's defaults may have drawn before the preset came)
        n = len(commands(pictures, "views"))
        assert flag(argv, "--jitter-strength") == "0.5" and flag(argv, "--image-size") == "16"
        assert flag(argv, "--n") == "4" and flag(argv, "--views") == "4" and flag(argv, "--seed") == "0"
        assert flag(argv, "--dataset") == "synthetic" and "--out" in argv
        panel.scroll_visible(animate=False)
        await wait_text(pilot, "Views: synthetic at 16 px, jitter 0.5", "▀▀▀▀")  # half blocks on screen

        # three quick changes: one command, with the last value (debounced; older ones dropped)
        jitter = app.screen.query_one("#field-jitter_strength", Input)
        for value in ("0.6", "0.7", "0.9"):
            jitter.value = value
            await pilot.pause(0.05)
        await wait_for(pilot, lambda: not panel.busy and "jitter 0.9" in panel.text,
                       what="the new views")
        assert [flag(a, "--jitter-strength") for a in commands(pictures, "views")[n - 1:]] == ["0.5", "0.9"]
        assert panel.query_one(".picture-image").image == panel.shown  # the new file is the one drawn
        await wait_text(pilot, "Views: synthetic at 16 px, jitter 0.9")

        # a field that does not change the views draws nothing; going back is the cached picture
        app.screen.query_one("#field-lr", Input).value = "0.5"
        jitter.value = "0.5"
        await wait_for(pilot, lambda: not panel.busy and panel.shown == first, what="the cached first views")
        assert len(commands(pictures, "views")) == n + 1


async def test_views_panel_shows_the_commands_error(runs_dir, pictures, monkeypatch):
    monkeypatch.setenv("FAKE_PICTURE_ERROR", "data/cifar-10-batches-py not found; add --download or set --data-dir")
    app = make_app(runs_dir, runner=FAKE_RUNNER, poll_interval=0.1)
    async with app.run_test(size=SIZE) as pilot:
        panel = await open_form(pilot)
        await wait_text(pilot, "✗ data/cifar-10-batches-py not found; add --download or set --data-dir")
        assert panel.shown is None and panel.error.startswith("data/cifar-10")
        assert app.screen.query_one("#launch")  # the form still works


async def test_slow_views_keep_the_ui_responsive(runs_dir, pictures, monkeypatch):
    monkeypatch.setenv("FAKE_PICTURE_SECONDS", "30")
    app = make_app(runs_dir, runner=FAKE_RUNNER, poll_interval=0.1)
    async with app.run_test(size=SIZE) as pilot:
        panel = await open_form(pilot)
        await wait_text(pilot, "drawing them (simclr views)")
        await wait_for(pilot, lambda: commands(pictures, "views"), what="the command to start")
        t0 = time.monotonic()
        app.screen.query_one("#run-name", Input).value = "still-typing"
        await wait_text(pilot, "still-typing", timeout=3)  # the form answers at once
        await pilot.press("escape")
        await wait_text(pilot, "filter runs", timeout=3)
        assert time.monotonic() - t0 < 3
        assert panel.shown is None
        job = panel._job
        assert job is not None and job.cancelled  # leaving the form killed the command
        await wait_for(pilot, lambda: job._proc.poll() is not None, what="the command to end")


async def test_a_terminal_without_images_says_so_in_one_line(runs_dir, pictures, monkeypatch):
    monkeypatch.setenv(IMAGES_ENV, "none")
    finished_run(runs_dir, "tiny-a")
    hand_made_map(runs_dir, "tiny-a")
    app = make_app(runs_dir, runner=FAKE_RUNNER, poll_interval=0.1)
    async with app.run_test(size=SIZE) as pilot:
        panel = await open_form(pilot)
        # the panel's own line (where the form is scrolled to depends on when its layout settles)
        await wait_for(pilot, lambda: "this terminal cannot draw images (SIMCLR_TUI_IMAGES=none)" in panel.text,
                       what="the panel's one line")
        await wait_text(pilot, "$ simclr pretrain")  # the form works on
        await pilot.press("escape")
        app.open_run("tiny-a")
        await wait_screen(pilot, RunDetailScreen, "#neighbours-picture")
        await pilot.press("6")
        text = await wait_text(pilot, "this terminal cannot draw images")
        assert sum("cannot draw images" in line for line in text.splitlines()) == 1
        await pilot.press("7")  # the map is text: it draws anyway
        await wait_text(pilot, "tiny-a: 100 points, 4 classes")
        assert not commands(pictures, "views") and not commands(pictures, "neighbours")


async def test_neighbours_tab_and_other_queries(runs_dir, pictures):
    finished_run(runs_dir, "tiny-a")
    app = make_app(runs_dir, runner=FAKE_RUNNER, poll_interval=0.1)
    async with app.run_test(size=SIZE) as pilot:
        app.open_run("tiny-a")
        screen = await wait_screen(pilot, RunDetailScreen, "#neighbours-picture")
        picture = screen.query_one("#neighbours-picture", Picture)
        await pilot.press("6")
        await wait_for(pilot, lambda: picture.shown is not None, what="the neighbours")
        first = picture.shown
        [argv] = commands(pictures, "neighbours")
        assert argv[:9] == ["neighbours", "--run-dir", str(runs_dir / "tiny-a"), "--queries", "6", "--k", "6",
                            "--seed", "0"]
        await wait_text(pilot, "Neighbours: 6 test queries (seed 0)", "▀")
        await pilot.press("n")
        await wait_for(pilot, lambda: picture.shown not in (None, first), what="other queries")
        assert [flag(a, "--seed") for a in commands(pictures, "neighbours")] == ["0", "1"]
        await wait_text(pilot, "Neighbours: 6 test queries (seed 1)")

        await pilot.press("5")  # the run's own views, from its config.json
        views = screen.query_one("#views-picture", Picture)
        await wait_for(pilot, lambda: views.shown is not None, what="the run's views")
        [argv] = commands(pictures, "views")
        assert argv[:7] == ["views", "--config", str(runs_dir / "tiny-a" / "config.json"), "--n", "6",
                            "--views", "4"]


async def test_the_map_draws_from_a_hand_made_npz(runs_dir, pictures):
    finished_run(runs_dir, "tiny-a")
    features = hand_made_map(runs_dir, "tiny-a")
    app = make_app(runs_dir, runner=FAKE_RUNNER, poll_interval=0.1)
    async with app.run_test(size=SIZE) as pilot:
        app.open_run("tiny-a")
        screen = await wait_screen(pilot, RunDetailScreen, "#embedding-map")
        await pilot.press("7")
        text = await wait_text(pilot, "tiny-a: 100 points, 4 classes", "plane", "frog", "PC 1")
        assert "⠀" in text or any(0x2800 < ord(c) <= 0x28FF for c in text)  # braille points
        assert not commands(pictures, "embed")  # cached: nothing ran
        emap = screen.query_one(MapPlot).map
        # PCA against numpy's own: the first two components of the centred features, up to sign
        x = features - features.mean(axis=0)
        _, _, vt = np.linalg.svd(x, full_matrices=False)
        want = x @ vt[:2].T
        for k in range(2):
            assert np.allclose(np.abs(emap.xy[:, k]), np.abs(want[:, k]), rtol=1e-4, atol=1e-4)
        assert [name for name, _ in emap.by_class()] == ["plane", "car", "bird", "frog"]


async def test_the_map_is_made_by_embed_when_missing(runs_dir, pictures):
    finished_run(runs_dir, "tiny-a")
    app = make_app(runs_dir, runner=FAKE_RUNNER, poll_interval=0.1)
    async with app.run_test(size=SIZE) as pilot:
        app.open_run("tiny-a")
        await wait_screen(pilot, RunDetailScreen, "#embedding-map")
        await pilot.press("7")
        await wait_text(pilot, "tiny-a: 150 points, 3 classes", "ship")
        [argv] = commands(pictures, "embed")
        assert argv[:3] == ["embed", "--run-dir", str(runs_dir / "tiny-a")]
        assert map_path(runs_dir, "tiny-a") == runs_dir / "tiny-a" / "features" / "map-last.npz"
        assert len(read_map(map_path(runs_dir, "tiny-a")).xy) == 150

        # a newer checkpoint makes the map stale: opening the tab again embeds again
        ckpt = runs_dir / "tiny-a" / "checkpoints" / "last.pt"
        made = map_path(runs_dir, "tiny-a").stat().st_mtime
        os.utime(ckpt, (made + 10, made + 10))
        await pilot.press("1")
        await pilot.press("7")
        await wait_for(pilot, lambda: len(commands(pictures, "embed")) == 2, what="the map made again")
        await wait_text(pilot, "tiny-a: 150 points, 3 classes")


async def test_compare_shows_two_maps_side_by_side(runs_dir, pictures):
    for name, offset in (("tiny-a", 0.0), ("tiny-b", 3.0)):
        finished_run(runs_dir, name)
        hand_made_map(runs_dir, name, offset)
    app = make_app(runs_dir, runner=FAKE_RUNNER, poll_interval=0.1)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: {"tiny-a", "tiny-b"} <= set(app.runs), what="the runs")
        app.push_screen(CompareScreen(["tiny-a", "tiny-b"]))
        screen = await wait_screen(pilot, CompareScreen, "#map-1")
        await pilot.press("3")
        text = await wait_text(pilot, "tiny-a: 100 points, 4 classes", "tiny-b: 100 points, 4 classes")
        line = next(ln for ln in text.splitlines() if "tiny-a: 100 points" in ln)
        assert "tiny-b: 100 points" in line  # side by side, on one line
        maps = screen.query(EmbeddingView)
        assert [m.key for m in maps] == ["tiny-a", "tiny-b"]
        assert maps[0].region.x < maps[1].region.x and maps[0].region.y == maps[1].region.y


def core_has_views() -> bool:
    return importlib.util.find_spec("core.cli.pictures") is not None


@pytest.mark.slow
async def test_real_core_views_on_preset_tiny(runs_dir, monkeypatch):
    if not core_has_views():
        pytest.skip("`python -m core views` does not exist yet")
    monkeypatch.setenv(IMAGES_ENV, "halfcell")
    app = make_app(runs_dir, poll_interval=0.2)  # the real runner: python -m core
    async with app.run_test(size=SIZE) as pilot:
        panel = await open_form(pilot)
        await wait_for(pilot, lambda: not panel.busy and "16 px" in panel.text, timeout=20, what="real views")
        assert panel.error == "" and panel.shown.stat().st_size > 0, panel.error
        panel.scroll_visible(animate=False)
        await wait_text(pilot, "Views: synthetic at 16 px", "▀▀▀▀")


def test_image_support_follows_the_terminal(monkeypatch):
    from simclr_tui import pictures

    monkeypatch.setattr(pictures, "_auto_mode", lambda: "sixel")  # what textual-image found at import
    assert pictures.image_support({"TERM": "xterm-256color"}).mode == "sixel"
    assert pictures.image_support({IMAGES_ENV: "halfcell", "TERM": "xterm-kitty"}).mode == "halfcell"
    for env, why in (({IMAGES_ENV: "none"}, "SIMCLR_TUI_IMAGES=none"), ({"TERM": "dumb"}, "TERM=dumb"),
                     ({"NO_COLOR": "1"}, "NO_COLOR"), ({IMAGES_ENV: "png"}, "not one of")):
        support = pictures.image_support(env)
        assert not support.ok and why in support.line() and "\n" not in support.line()


def test_a_map_is_stale_once_its_checkpoint_changes_even_if_the_map_is_newer(runs_dir):
    """The map records the checkpoint it read (size, mtime_ns); a last.pt replaced while the map
    was being made leaves a map newer than the checkpoint, yet stale."""
    from simclr_tui.pictures import map_is_fresh

    finished_run(runs_dir, "tiny-a")
    run = runs_dir / "tiny-a"
    ckpt = run / "checkpoints" / "last.pt"
    out = map_path(runs_dir, "tiny-a")
    out.parent.mkdir(parents=True, exist_ok=True)
    st = ckpt.stat()
    np.savez(out, features=np.zeros((2, 2)), labels=np.zeros(2, np.int64), classes=np.array(["a"]),
             checkpoint_stamp=np.array([st.st_size, st.st_mtime_ns], np.int64))
    assert map_is_fresh(out, run)
    os.utime(ckpt, ns=(st.st_atime_ns, st.st_mtime_ns - 10**9))  # another checkpoint, older than the map
    assert out.stat().st_mtime > ckpt.stat().st_mtime and not map_is_fresh(out, run)

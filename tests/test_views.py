"""`simclr views` and TensorBoard's views/augmented: pictures of the training views, checked on pixels."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core import cli
from core.config import PretrainConfig, preset
from core.simclr.augment import GRAY_WEIGHTS
from core.training.data import load_tensor_split
from core.training.pipeline import augment_config
from core.training.views_grid import GAP, TB_TAG, grid_image, log_views, pick, views_grid

ROOT = Path(__file__).resolve().parents[1]
TINY = PretrainConfig.from_dict(preset("tiny"))  # synthetic, 16 px, --subset 256


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMCLR_CACHE", str(tmp_path / ".cache"))


def cells(grid: torch.Tensor, size: int, columns: int) -> torch.Tensor:
    """The grid's cells back. (3, H, W) -> (rows, columns, 3, S, S), as int32."""
    rows = (grid.shape[1] + GAP) // (size + GAP)
    assert grid.shape[1:] == (rows * size + (rows - 1) * GAP, columns * size + (columns - 1) * GAP)
    step = size + GAP
    return torch.stack([torch.stack([grid[:, r * step:r * step + size, k * step:k * step + size]
                                     for k in range(columns)]) for r in range(rows)]).int()


def gray(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma in every channel (float). Shape: (3, S, S)."""
    w = torch.tensor(GRAY_WEIGHTS).view(3, 1, 1)
    return (x.float() * w).sum(0, keepdim=True).expand(3, -1, -1)


def noise_folder(root: Path, size: int, n_per_class: int = 5) -> Path:
    """train/<class>/*.png of random noise: a flip is never the image itself."""
    g = np.random.default_rng(0)
    for c in range(2):
        (root / "train" / f"c{c}").mkdir(parents=True)
        for i in range(n_per_class):
            Image.fromarray(g.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / "train" / f"c{c}" / f"{i}.png")
    return root


def noise_zip(path: Path, size: int, n_per_class: int = 6) -> Path:
    g = np.random.default_rng(1)
    with zipfile.ZipFile(path, "w") as z:
        for c in range(2):
            for i in range(n_per_class):
                buf = io.BytesIO()
                Image.fromarray(g.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, format="PNG")
                z.writestr(f"train/c{c}/{i}.png", buf.getvalue())
    return path


# ---------------------------------------------------------------------- the pixels
@pytest.mark.parametrize("path", ["batched", "per-image"])
def test_without_colour_and_crop_a_view_is_the_image_or_its_flip(tmp_path, path):
    """Jitter 0, blur off, crop scale 1: each view is the image or its mirror, or (grayscale,
    p=0.2, fixed) the luma of one of them: within 2 levels after resizing and uint8 rounding."""
    if path == "batched":
        cfg = TINY
    else:  # > 64 px: the DataLoader path, torchvision per image
        cfg = TINY.replace(dataset="folder", data_dir=str(noise_folder(tmp_path / "d", 72)), image_size=72, subset=None)
    identity = replace(augment_config(cfg), jitter_strength=0.0, blur=False, crop_scale=(1.0, 1.0))
    views = 4
    c = cells(views_grid(cfg, n=8, views=views, augment=identity), cfg.image_size, 1 + views)
    assert c.shape[0] == 8
    kinds = []
    for row in c:
        original = row[0]
        candidates = {"same": original, "flip": original.flip(-1),
                      "gray": gray(original), "gray flip": gray(original.flip(-1))}
        for view in row[1:]:
            errors = {k: (view - v).abs().max().item() for k, v in candidates.items()}
            kind = min(errors, key=errors.get)
            assert errors[kind] <= 2, errors
            kinds.append(kind)
    assert {"same", "flip"} <= set(kinds)  # 32 views: both flips turn up (and mostly in colour)
    assert kinds.count("same") + kinds.count("flip") > len(kinds) // 2


def test_with_the_default_config_the_views_differ_from_the_image():
    c = cells(views_grid(TINY, n=8, views=4), 16, 5)
    diff = (c[:, 1:] - c[:, :1]).abs().float().mean(dim=(2, 3, 4))  # (rows, views)
    assert (diff > 8).float().mean() > 0.9, diff


def test_the_grid_png_has_a_row_per_image_and_the_originals_first(tmp_path):
    out = tmp_path / "grid.png"
    assert cli.main(["views", "--preset", "tiny", "--n", "5", "--views", "3", "--seed", "4", "--out", str(out)]) == 0
    png = torch.from_numpy(np.array(Image.open(out))).permute(2, 0, 1)
    assert png.shape == (3, 5 * 16 + 4 * GAP, 4 * 16 + 3 * GAP)
    c = cells(png, 16, 4)
    # the originals are the pipeline's base images: the training split at 16 px, --subset 256
    train = load_tensor_split("synthetic", "data", "train", 16, seed=4).images[:256]
    assert torch.equal(c[:, 0], train[pick(256, 5, seed=4)].int())
    assert not [p for p in tmp_path.iterdir() if p.name != "grid.png"]  # no temporary file left
    big = tmp_path / "big.png"  # --scale 3: every pixel a sharp 3 x 3 block of the same grid
    assert cli.main(["views", "--preset", "tiny", "--n", "5", "--views", "3", "--seed", "4", "--scale", "3",
                     "--out", str(big)]) == 0
    assert np.array_equal(np.asarray(Image.open(big)), np.asarray(Image.open(out)).repeat(3, 0).repeat(3, 1))


def test_a_zip_of_class_folders_works_and_the_seed_decides_the_picture(tmp_path):
    data = noise_zip(tmp_path / "train.zip", 20)
    args = ["views", "--dataset", "folder", "--data-dir", str(data), "--image-size", "16", "--n", "4"]
    paths = {}
    for name, seed in (("a", "1"), ("b", "1"), ("c", "2")):
        paths[name] = tmp_path / f"{name}.png"
        assert cli.main([*args, "--seed", seed, "--out", str(paths[name])]) == 0
    assert paths["a"].read_bytes() == paths["b"].read_bytes()
    a, c = (np.asarray(Image.open(paths[k])) for k in "ac")
    assert a.shape == c.shape == (4 * 16 + 3 * GAP, 5 * 16 + 4 * GAP, 3)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("args, message", [
    (["--preset", "tiny", "--n", "0"], "--n 0"),
    (["--preset", "tiny", "--n", "65"], "--n 65"),
    (["--preset", "tiny", "--views", "0"], "--views 0"),
    (["--preset", "tiny", "--views", "17"], "--views 17"),
    (["--preset", "tiny", "--scale", "9"], "--scale must be 1 to 8"),
    (["--preset", "tiny", "--image-size", "64", "--n", "64", "--scale", "8"], "at most 16384"),
    (["--preset", "tiny", "--out", "EMPTY"], "not a folder"),
    (["--preset", "tiny", "--out", "grid.jpg"], "give the .png file"),
    (["--dataset", "folder", "--data-dir", "MISSING"], "does not exist"),
    (["--dataset", "folder", "--data-dir", "EMPTY"], "no images found"),
    (["--preset", "tiny", "--jitter-strength", "5"], "--jitter-strength"),
    (["--preset", "tiny", "--out", "NOFOLDER/grid.png"], "does not exist"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, args, message):
    (tmp_path / "EMPTY").mkdir()
    args = [a.replace("MISSING", str(tmp_path / "missing")).replace("EMPTY", str(tmp_path / "EMPTY"))
            .replace("NOFOLDER", str(tmp_path / "nofolder")) for a in args]
    out = ["--out", str(tmp_path / "grid.png")] if "--out" not in args else []
    before = sorted(p.name for p in tmp_path.iterdir())
    assert cli.main(["views", *args, *out]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("simclr: error:") and "\n" not in err and message in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


# ---------------------------------------------------------------------- TensorBoard
def test_a_new_run_shows_its_views_in_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SIMCLR_CACHE": str(tmp_path / ".cache")}
    res = subprocess.run([sys.executable, "-m", "core", "pretrain", "--preset", "tiny", "--epochs", "1",
                          "--max-steps", "2", "--knn-every", "0", "--run-dir", str(run)],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert res.returncode == 0, res.stderr
    acc = EventAccumulator(str(run), size_guidance={"images": 0})
    acc.Reload()
    assert TB_TAG in acc.Tags()["images"]
    (image,) = acc.Images(TB_TAG)
    assert image.step == 0
    assert (image.height, image.width) == (8 * 16 + 7 * GAP, 5 * 16 + 4 * GAP)
    picture = Image.open(io.BytesIO(image.encoded_image_string))
    assert picture.size == (image.width, image.height)


def test_the_picture_changes_nothing_a_run_trains(tmp_path, monkeypatch):
    """The drawing has its own generator: weights after 3 steps are equal with and without it."""
    from core.training import setup
    from core.training.checkpoint import load_checkpoint

    args = ["pretrain", "--preset", "tiny", "--epochs", "1", "--max-steps", "3", "--knn-every", "0"]
    assert cli.main([*args, "--run-dir", str(tmp_path / "with")]) == 0
    monkeypatch.setattr(setup, "log_views", lambda *a, **k: None)
    assert cli.main([*args, "--run-dir", str(tmp_path / "without")]) == 0
    a, b = (load_checkpoint(tmp_path / d / "checkpoints" / "last.pt")["model"] for d in ("with", "without"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_picture_that_cannot_be_drawn_is_one_line_and_never_fails_the_run():
    class Log:
        enabled, said = True, []

        def say(self, text):
            self.said.append(text)

    log = Log()
    log_views(log, pipe=object(), seed=0)  # not a pipeline: the drawing fails
    assert len(log.said) == 1 and "could not draw the augmented views" in log.said[0]
    log.enabled = False  # ranks other than 0 do nothing at all
    log_views(log, pipe=object(), seed=0)
    assert len(log.said) == 1


def test_grid_layout_puts_each_cell_in_place():
    c = torch.arange(2 * 3, dtype=torch.uint8).view(2, 3, 1, 1, 1).expand(2, 3, 3, 4, 4)
    g = grid_image(c, gap=1)
    assert g.shape == (3, 2 * 4 + 1, 3 * 4 + 2)
    assert g[0, 5, 10] == 5 and g[0, 4, 0] == 255 and g[0, 0, 4] == 255

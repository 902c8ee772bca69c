"""`simclr neighbours` and the neighbours picture of a kNN job (core/evaluation/neighbours.py):
numbers against features computed here, pixels of the PNG, one-line errors, TensorBoard."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core import load_encoder
from core.cli import main
from core.config import PretrainConfig
from core.evaluation.neighbours import BORDER, COLOURS, TILE, cell_origin, grid_size, neighbours
from core.training.pipeline import labelled_split

TINY = ["--preset", "tiny", "--max-steps", "2", "--knn-every", "0"]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A real tiny pretraining run (2 steps, synthetic data: 2560 labelled training images)."""
    path = tmp_path_factory.mktemp("nn") / "run"
    assert main(["pretrain", *TINY, "--run-dir", str(path)]) == 0
    return path


def train_images(run: Path):
    cfg = PretrainConfig.from_dict(json.loads((run / "config.json").read_text()))
    return labelled_split(cfg, "train")


@pytest.fixture(scope="module")
def train_folder(run, tmp_path_factory) -> Path:
    """24 of the run's own training images as PNGs, D/<class>/<row>.png (lossless: the same pixels)."""
    data, root = train_images(run), tmp_path_factory.mktemp("queries")
    for row in range(0, len(data), len(data) // 24):
        folder = root / data.classes[int(data.labels[row])]
        folder.mkdir(exist_ok=True)
        Image.fromarray(data.images[row].permute(1, 2, 0).numpy()).save(folder / f"{row:04d}.png")
    return root


def features_here(run: Path, rows: list[int]) -> torch.Tensor:
    """The encoder's features of training images ``rows``, one image at a time, by the exported encoder."""
    encoder, transform = load_encoder(run, "last", None, "cpu")
    images = train_images(run).images
    with torch.no_grad():
        return torch.cat([encoder(transform(images[r])[None]) for r in rows])


def pixel(img: Image.Image, row: int, col: int) -> tuple[int, int, int]:
    """A pixel of cell (row, col)'s frame: its left edge, half-way down."""
    x, y = cell_origin(row, col)
    return img.getpixel((x + BORDER // 2, y + BORDER + TILE // 2))


def test_training_images_find_themselves_first_and_the_numbers_are_cosines(run, train_folder, tmp_path):
    out = tmp_path / "nn.png"
    grid = neighbours(run, out, data_dir=train_folder, queries=6, k=5, seed=1, device="cpu", say=lambda _: None)
    rows = [int(Path(name).stem) for name in grid.names]
    assert len(rows) == 6 and len(set(rows)) == 6
    # each query is a training image: its first neighbour is itself, at similarity 1
    assert grid.index[:, 0].tolist() == rows
    assert torch.allclose(grid.similarity[:, 0], torch.ones(6), atol=1e-5)
    # sorted, and the cosines of features computed here, image by image
    assert (grid.similarity[:, :-1] >= grid.similarity[:, 1:]).all()
    q = torch.nn.functional.normalize(features_here(run, rows), dim=1)
    for r in range(6):
        n = torch.nn.functional.normalize(features_here(run, grid.index[r].tolist()), dim=1)
        assert torch.allclose(n @ q[r], grid.similarity[r], atol=1e-4)
    # marks: the query's class (its folder) against each neighbour's label
    labels = train_images(run).labels
    assert grid.query_labels.tolist() == labels[rows].tolist()
    img = Image.open(out).convert("RGB")
    assert img.size == grid_size(6, 6)
    for r in range(6):
        assert pixel(img, r, 0) == COLOURS["query"]
        for c in range(5):
            same = int(labels[grid.index[r, c]]) == int(labels[rows[r]])
            assert pixel(img, r, c + 1) == COLOURS["same" if same else "other"], (r, c)
    assert "other" in {m for row in grid.marks() for m in row}  # both colours were looked at
    # the picture of a tile is the image itself, upscaled
    x, y = cell_origin(0, 1)
    tile = np.asarray(img)[y + BORDER:y + BORDER + TILE, x + BORDER:x + BORDER + TILE]
    own = train_images(run).images[rows[0]].permute(1, 2, 0).numpy()
    assert (tile[::TILE // 16, ::TILE // 16] == own).all()


def test_the_cli_draws_test_queries_from_the_cache_and_a_seed_picks_others(run, tmp_path, capsys):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    assert main(["neighbours", "--run-dir", str(run), "--queries", "3", "--k", "4", "--out", str(a)]) == 0
    assert Image.open(a).size == grid_size(3, 5)
    assert {p.name for p in (run / "features").iterdir()} >= {"train-last.pt", "test-last.pt"}
    capsys.readouterr()
    grid_a = neighbours(run, a, queries=3, k=4, seed=0, say=print)
    assert "from the cache" in capsys.readouterr().out
    grid_b = neighbours(run, b, queries=3, k=4, seed=7, say=lambda _: None)
    assert grid_a.names != grid_b.names and all(n.startswith("test ") for n in grid_b.names)
    assert Image.open(b).size == grid_size(3, 5) == ((TILE + 2 * BORDER + 4) * 5 + 4, (TILE + 2 * BORDER + 18) * 3 + 4)


@pytest.mark.parametrize("case", ["k beyond the bank", "queries 0", "no out folder", "no images", "no checkpoint",
                                  "bad checkpoint name"])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(run, tmp_path, capsys, case):
    target = run
    if case == "no checkpoint":
        target = tmp_path / "untrained"
        target.mkdir()
        (target / "config.json").write_text((run / "config.json").read_text())
    (tmp_path / "empty").mkdir()
    out = tmp_path / ("nope/nn.png" if case == "no out folder" else "nn.png")
    extra = {"k beyond the bank": ["--k", "2561"], "queries 0": ["--queries", "0"], "no out folder": [],
             "no images": ["--data-dir", str(tmp_path / "empty")], "no checkpoint": [],
             "bad checkpoint name": ["--checkpoint", "../last"]}[case]
    before = sorted(p.name for p in (run / "features").iterdir()) if (run / "features").is_dir() else []
    capsys.readouterr()
    assert main(["neighbours", "--run-dir", str(target), "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("simclr: error: ") and len(err.strip().splitlines()) == 1, err
    assert not out.exists() and not list(tmp_path.glob("*.png")) and not list(tmp_path.glob(".*tmp*"))
    assert (sorted(p.name for p in (run / "features").iterdir()) if (run / "features").is_dir() else []) == before
    assert not (target / "features").exists() or target == run


def test_a_knn_job_adds_the_picture_to_the_runs_tensorboard(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert main(["knn", "--run-dir", str(run), "--k", "10"]) == 0
    ea = EventAccumulator(str(run), size_guidance={"images": 0})
    ea.Reload()
    assert "neighbours/knn-last" in ea.Tags()["images"]
    (event,) = ea.Images("neighbours/knn-last")
    step = json.loads((run / "eval" / "knn-last.json").read_text())["pretrain_step"]
    assert event.step == step == 2  # the evaluated checkpoint's pretraining step
    img = Image.open(io.BytesIO(event.encoded_image_string))
    assert img.size == (event.width, event.height) == grid_size(8, 9)


def test_a_failed_picture_is_one_line_and_the_knn_job_still_finishes(run, monkeypatch, capsys):
    import core.evaluation.frozen as frozen

    def broken(*args, **kwargs):
        raise OSError("disk full\nsecond line")

    monkeypatch.setattr(frozen, "add_to_tensorboard", broken)
    assert main(["knn", "--run-dir", str(run), "--k", "10"]) == 0
    out = capsys.readouterr().out
    assert "could not add the neighbours picture to the run's TensorBoard: OSError: disk full\n" in out
    assert "second line" not in out
    assert json.loads((run / "eval" / "knn-last" / "status.json").read_text())["state"] == "finished"
    assert (run / "eval" / "knn-last.json").is_file()

"""The embedding map: `simclr embed --tensorboard` read back by TensorBoard's own projector
plugin, the projector's limits (sprite, 100,000 points), and the TUI's torch-free 2-D map
checked against an independent SVD."""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.cli import main
from core.evaluation import projector
from core.evaluation.projector import MAX_POINTS, SPRITE_MAX, make_sprite, sample_points, thumb_size
from core.report.embedding_map import map_file, pca_2d, read_map

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------- pca_2d
def svd_reference(x: np.ndarray) -> np.ndarray:
    """The first two principal components by numpy's SVD of the centred matrix, each
    component's largest loading made positive."""
    xc = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    out = []
    for v in vt[:2]:
        v = v if v[np.argmax(np.abs(v))] > 0 else -v
        out.append(xc @ v)
    return np.stack(out, 1)


def test_pca_2d_is_numpys_svd_with_a_fixed_sign():
    # a hand-made matrix: the spread is 2 along x, 0.5 along y, nothing along z
    x = np.array([[1.0, 0, 3], [-1, 0, 3], [0, 0.5, 3], [0, -0.5, 3]]) + 10
    np.testing.assert_allclose(pca_2d(x), [[1, 0], [-1, 0], [0, 0.5], [0, -0.5]], atol=1e-6)
    # and a random one with distinct singular values
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 12)) * np.linspace(3, 0.2, 12) @ np.linalg.qr(rng.normal(size=(12, 12)))[0]
    got = pca_2d(x.astype(np.float32))
    assert got.shape == (200, 2) and got.dtype == np.float32
    np.testing.assert_allclose(got, svd_reference(x), atol=1e-4)
    assert np.array_equal(pca_2d(-x * 1.0), pca_2d(-x * 1.0))  # deterministic
    # the sign rule holds for a flipped copy: the same picture up to the data's own flip
    np.testing.assert_allclose(pca_2d(x[::-1]), got[::-1], atol=1e-4)


def test_pca_2d_of_degenerate_inputs():
    assert pca_2d(np.zeros((0, 5))).shape == (0, 2)
    one_dim = pca_2d(np.array([[1.0], [2.0], [4.0]]))
    np.testing.assert_allclose(one_dim[:, 1], 0)
    np.testing.assert_allclose(np.abs(one_dim[:, 0]), np.abs([-4 / 3, -1 / 3, 5 / 3]), atol=1e-6)
    np.testing.assert_allclose(pca_2d(np.ones((4, 3))), 0)


def test_the_map_module_imports_no_torch():
    code = ("import sys; sys.modules['torch'] = None; import core.report.embedding_map as m, numpy as np; "
            "print(m.pca_2d(np.eye(3)).shape)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert res.returncode == 0 and res.stdout.strip() == "(3, 2)", res.stderr


# ---------------------------------------------------------------------- the projector's limits
def test_the_sprite_is_square_and_within_8192_px():
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)]
    side = thumb_size(5, image_side=40)
    assert side <= SPRITE_MAX // 3 and side == 40  # no larger than the images
    assert thumb_size(5, image_side=100_000) <= SPRITE_MAX // 3
    for n in (1, 2, 5, 10_000, 99_999, 100_000):
        assert thumb_size(n, 512) * math.ceil(math.sqrt(n)) <= SPRITE_MAX
    assert thumb_size(100_000, 512) == 25  # 317 columns

    def image(i: int):
        if i == 3:
            raise OSError("unreadable")
        return Image.new("RGB", (60, 40), colours[i])

    sprite = make_sprite(image, np.arange(5), side)
    assert sprite.size == (3 * side, 3 * side)  # ceil(sqrt(5)) = 3 thumbnails a side, square
    px = sprite.load()
    for k in (0, 1, 2, 4):
        assert px[(k % 3) * side + side // 2, (k // 3) * side + side // 2] == colours[k]
    assert px[0 * side + 5, 1 * side + 5] == (128, 128, 128)  # point 3 could not be read: grey


def test_more_than_100000_points_are_sampled_by_class_and_said():
    n = MAX_POINTS + 7
    labels = np.repeat([0, 1, 2, -1], [60_000, 30_000, 10_003, 4])
    idx, note = sample_points(labels)
    assert len(idx) == MAX_POINTS and np.all(np.diff(idx) > 0)
    assert note is not None and str(n) in note and "stratified by class" in note and "\n" not in note
    for lab, count in ((0, 60_000), (1, 30_000), (2, 10_003), (-1, 4)):
        assert abs((labels[idx] == lab).sum() - count * MAX_POINTS / n) <= 1
    again, _ = sample_points(labels)
    assert np.array_equal(idx, again)  # seeded
    assert not np.array_equal(idx, sample_points(labels, seed=1)[0])
    whole, none = sample_points(labels[:MAX_POINTS])
    assert none is None and np.array_equal(whole, np.arange(MAX_POINTS))


def test_write_projector_samples_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(projector, "MAX_POINTS", 7)
    said = []
    feats = np.arange(20 * 3, dtype=np.float32).reshape(20, 3) / 7
    labels = np.arange(20) % 2
    shown = projector.write_projector(tmp_path, "test-last", feats, labels, ["cat", "dog"],
                                      [f"x\t{i}.png" for i in range(20)], lambda i: Image.new("RGB", (8, 8)),
                                      8, say=said.append)
    assert shown["points"] == 7 and len(said) == 1 and "20 points" in said[0]
    folder = tmp_path / "projector" / "test-last"
    tensor = np.loadtxt(folder / "tensors.tsv", delimiter="\t")
    meta = (folder / "metadata.tsv").read_text().splitlines()
    assert tensor.shape == (7, 3) and len(meta) == 8 and meta[0] == "label\tpath"
    assert all(row.count("\t") == 1 for row in meta)  # a tab in a path never makes a column
    rows = [int(r.split("\t")[1].split(" ")[1].removesuffix(".png")) for r in meta[1:]]
    np.testing.assert_allclose(tensor, feats[rows], rtol=1e-5)
    assert [r.split("\t")[0] for r in meta[1:]] == [["cat", "dog"][i % 2] for i in rows]
    assert not [p for p in tmp_path.rglob(".*") if p.is_file()]  # no temp file left


# ---------------------------------------------------------------------- a real run, read by TensorBoard
@pytest.fixture(scope="module")
def run(tmp_path_factory):
    runs = tmp_path_factory.mktemp("projector") / "runs"
    argv = [sys.executable, "-m", "core", "pretrain", "--preset", "tiny", "--epochs", "1", "--max-steps", "2",
            "--knn-every", "0", "--run-dir", str(runs / "r")]
    res = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert res.returncode == 0, res.stderr
    return runs / "r"


def tensorboard_views(runs: Path):
    """What `tensorboard --logdir runs` serves: its runs, and the projector plugin's routes."""
    from werkzeug.test import Client
    from tensorboard.backend.event_processing.data_provider import MultiplexerDataProvider
    from tensorboard.backend.event_processing.plugin_event_multiplexer import EventMultiplexer
    from tensorboard.plugins.base_plugin import TBContext
    from tensorboard.plugins.projector.projector_plugin import ProjectorPlugin

    mux = EventMultiplexer()
    mux.AddRunsFromDirectory(str(runs))
    mux.Reload()
    plugin = ProjectorPlugin(TBContext(logdir=str(runs), data_provider=MultiplexerDataProvider(mux, str(runs))))
    apps = plugin.get_plugin_apps()

    def get(route: str, **query):
        res = Client(apps[route]).get(route, query_string=query)
        assert res.status_code == 200, res.get_data(as_text=True)
        return res.get_data()
    return sorted(mux.Runs()), get


def test_embed_tensorboard_is_read_by_tensorboards_projector_as_one_run(run, capsys):
    assert main(["embed", "--run-dir", str(run), "--tensorboard"]) == 0
    out = capsys.readouterr().out
    assert f"wrote {map_file(run)}" in out and "projector" in out
    emb = np.load(map_file(run))
    n, d = emb["features"].shape
    assert n == 512 and list(emb["classes"]) == [f"class{i}" for i in range(10)]

    run_names, get = tensorboard_views(run.parent)
    assert run_names == ["r"]  # the projector's folder adds no run
    assert json.loads(get("/runs")) == ["r"]
    config = json.loads(get("/info", run="r"))
    (info,) = config["embeddings"]
    assert info["tensorName"] == "test-last" and [int(v) for v in info["tensorShape"]] == [n, d]
    tensor = np.frombuffer(get("/tensor", run="r", name="test-last"), dtype=np.float32).reshape(n, d)
    np.testing.assert_allclose(tensor, emb["features"], rtol=1e-5, atol=1e-6)
    meta = get("/metadata", run="r", name="test-last").decode().splitlines()
    assert meta[0] == "label\tpath" and len(meta) == n + 1
    assert [r.split("\t")[0] for r in meta[1:]] == [f"class{i}" for i in emb["labels"]]
    sprite = Image.open(io.BytesIO(get("/sprite_image", run="r", name="test-last")))
    side = [int(v) for v in info["sprite"]["singleImageDim"]]
    assert side == [16, 16] and sprite.size == (23 * 16, 23 * 16)  # ceil(sqrt(512)) = 23, the run's 16 px

    # the TUI's map: the same points, projected, without torch
    m = read_map(map_file(run))
    np.testing.assert_allclose(m.xy, svd_reference(emb["features"].astype(np.float64)), atol=1e-3)
    assert np.array_equal(m.labels, emb["labels"]) and m.label_name(0) == f"class{emb['labels'][0]}"


def test_a_folder_adds_an_embedding_and_the_run_stays_one(run, tmp_path, capsys):
    data = tmp_path / "photos"
    for i, name in enumerate(["a/x.png", "a/y.png", "b/z.png", "b/w.png", "b/v.png"]):
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (40, 30), (40 * i, 255 - 40 * i, 90)).save(data / name)
    assert main(["embed", "--run-dir", str(run), "--data-dir", str(data), "--tensorboard"]) == 0
    assert "photos" in capsys.readouterr().out
    run_names, get = tensorboard_views(run.parent)
    assert run_names == ["r"]
    names = sorted(e["tensorName"] for e in json.loads(get("/info", run="r"))["embeddings"])
    assert "folder-photos-last" in names
    meta = get("/metadata", run="r", name="folder-photos-last").decode().splitlines()
    assert meta == ["label\tpath", "a\ta/x.png", "a\ta/y.png", "b\tb/v.png", "b\tb/w.png", "b\tb/z.png"]
    sprite = Image.open(io.BytesIO(get("/sprite_image", run="r", name="folder-photos-last")))
    assert sprite.size == (3 * 16, 3 * 16)  # 5 points: 3 a side, thumbnails no larger than the run's 16 px


def test_bad_input_is_one_line_and_writes_nothing(run, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    bare = tmp_path / "bare"  # a run's config without a checkpoint
    bare.mkdir()
    (bare / "config.json").write_text((run / "config.json").read_text())
    cases = ((["--run-dir", str(bare), "--tensorboard"], "does not exist"),
             (["--run-dir", str(bare)], "does not exist"),
             (["--run-dir", str(run), "--data-dir", str(tmp_path / "empty"), "--tensorboard"], "no images"),
             (["--run-dir", str(run), "--data-dir", str(tmp_path / "empty")], "--tensorboard"),
             (["--run-dir", str(tmp_path / "empty"), "--tensorboard"], "not a run directory"),
             (["--run-dir", str(run), "--checkpoint", "epoch_0009"], "does not exist"))
    capsys.readouterr()
    for argv, message in cases:
        assert main(["embed", *argv]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (argv, err)
    assert sorted(p.name for p in bare.iterdir()) == ["config.json"]
    assert not list((tmp_path / "empty").iterdir())
    assert not (run / "features" / "map-epoch_0009.npz").exists()


def test_knn_projector_writes_the_map_and_the_projector_after_the_evaluation(tmp_path, capsys):
    runs = tmp_path / "runs"
    argv = [sys.executable, "-m", "core", "pretrain", "--preset", "tiny", "--epochs", "1", "--max-steps", "2",
            "--knn-every", "0", "--run-dir", str(runs / "k")]
    assert subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=300).returncode == 0
    run = runs / "k"
    assert main(["knn", "--run-dir", str(run), "--k", "10", "--data-dir", str(tmp_path), "--projector"]) == 2
    assert "--projector maps the run's own test split" in capsys.readouterr().err
    assert main(["knn", "--run-dir", str(run), "--k", "10", "--projector"]) == 0
    assert (run / "eval" / "knn-last.json").is_file() and map_file(run).is_file()
    run_names, get = tensorboard_views(runs)
    assert "k" in run_names and all(not n.startswith("k/projector") for n in run_names)
    (info,) = json.loads(get("/info", run="k"))["embeddings"]
    assert info["tensorName"] == "test-last" and int(info["tensorShape"][0]) == len(read_map(map_file(run)).labels)

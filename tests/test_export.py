"""`simclr export` and `core.load_encoder`: the trained encoder in standard formats, checked
against torchvision itself and against a fresh process that never imports this package."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from core import load_encoder
from core.cli import main

TINY = ["--preset", "tiny", "--max-steps", "2", "--knn-every", "0"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    assert main(["pretrain", *TINY, "--width", "64", "--run-dir", str(root / "w64")]) == 0
    assert main(["pretrain", *TINY, "--run-dir", str(root / "w8")]) == 0
    return root


def images(n: int = 6, size: int = 16) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return nn.functional.cosine_similarity(a, b, dim=1)


def test_torchvision_loads_the_export_strictly_and_gives_the_same_features(runs, tmp_path):
    out = tmp_path / "encoder.pt"
    assert main(["export", "--run-dir", str(runs / "w64"), "--format", "torchvision", "--out", str(out)]) == 0
    meta = json.loads((tmp_path / "encoder.json").read_text())
    assert meta["arch"] == "resnet18" and meta["width"] == 64 and meta["cifar_stem"] is True
    assert meta["image_size"] == 16 and meta["feature_dim"] == 512 and meta["step"] == 2 and len(meta["mean"]) == 3
    net = torchvision.models.resnet18()
    net.fc = nn.Identity()
    net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)  # the CIFAR stem
    net.maxpool = nn.Identity()
    net.load_state_dict(torch.load(out, weights_only=True), strict=True)
    ours, transform = load_encoder(runs / "w64")
    x = images()
    with torch.no_grad():
        assert cosine(net.eval()(x), ours(x)).min() >= 0.9999
    assert transform(torch.zeros(3, 20, 20, dtype=torch.uint8)).shape == (3, 16, 16)


def test_safetensors_holds_the_same_tensors_and_the_description(runs, tmp_path):
    from safetensors import safe_open

    out = tmp_path / "enc.safetensors"
    assert main(["export", "--run-dir", str(runs / "w8"), "--format", "safetensors", "--out", str(out)]) == 0
    ours, _ = load_encoder(runs / "w8")
    with safe_open(str(out), "pt") as f:
        assert sorted(f.keys()) == sorted(ours.state_dict())
        assert all(torch.equal(f.get_tensor(k), v) for k, v in ours.state_dict().items())
        assert json.loads(f.metadata()["simclr"])["width"] == 8
    assert json.loads((tmp_path / "enc.json").read_text())["format"] == "safetensors"


@pytest.mark.parametrize("with_head", [False, True])
def test_the_torch_export_program_runs_in_a_process_without_this_package(runs, tmp_path, with_head):
    out = tmp_path / "enc.pt2"
    argv = ["export", "--run-dir", str(runs / "w8"), "--format", "torch-export", "--out", str(out)]
    assert main(argv + (["--with-head"] if with_head else [])) == 0
    x = images(5)
    torch.save(x, tmp_path / "x.pt")
    script = (f"import sys, torch; m = torch.export.load({str(out)!r}).module(); "
              f"torch.save(m(torch.load({str(tmp_path / 'x.pt')!r})), {str(tmp_path / 'y.pt')!r}); "
              f"assert 'core' not in sys.modules and 'simclr_tui' not in sys.modules")
    res = subprocess.run([sys.executable, "-I", "-c", script], capture_output=True, text=True, cwd=tmp_path,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    ours, _ = load_encoder(runs / "w8")
    with torch.no_grad():
        want = ours(x)
    got = torch.load(tmp_path / "y.pt")
    if with_head:
        assert got.shape == (5, 128)
    else:
        assert cosine(got, want).min() >= 0.9999


@pytest.mark.parametrize("argv, message", [
    (["--run-dir", "{runs}/w8", "--format", "torchvision"], "this run has width 8: export it as safetensors"),
    (["--run-dir", "{runs}/w64", "--format", "torchvision", "--checkpoint", "epoch_0009"], "epoch_0009.pt does not exist"),
    (["--run-dir", "{runs}/w64", "--format", "safetensors", "--out", "{tmp}/no/such/enc.st"], "does not exist; create it"),
    (["--run-dir", "{tmp}", "--format", "safetensors"], "is not a run directory"),
    (["--run-dir", "{runs}/w64", "--format", "onnx"], "invalid choice: 'onnx'"),
    (["--run-dir", "{runs}/w64", "--format", "safetensors", "--checkpoint", "../../w8/checkpoints/last"],
     "--checkpoint must be last or epoch_NNNN"),
    (["--run-dir", "{runs}/w8", "--format", "safetensors", "--ema"], "kept no EMA encoder"),
])
def test_bad_exports_are_one_line_and_write_nothing(runs, tmp_path, capsys, argv, message):
    argv = [a.format(runs=runs, tmp=tmp_path) for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "enc.out")]
    assert main(["export", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert list(tmp_path.iterdir()) == []


def write_images(root: Path, names: list[str], size: int = 20) -> None:
    from PIL import Image

    g = torch.Generator().manual_seed(1)
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        pixels = (torch.rand(size, size, 3, generator=g) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(root / name)


def test_embed_writes_what_torchvision_and_load_encoder_compute(runs, tmp_path):
    import numpy as np
    from PIL import Image

    data = tmp_path / "photos"
    write_images(data, ["b/x.png", "a/y.jpg", "a/z.png"])
    (data / "a" / "broken.jpg").write_bytes(b"not an image")
    out = tmp_path / "emb.npz"
    assert main(["embed", "--run-dir", str(runs / "w64"), "--data-dir", str(data), "--out", str(out)]) == 0
    got = np.load(out)
    assert list(got["paths"]) == ["a/y.jpg", "a/z.png", "b/x.png"]  # sorted; the broken file skipped
    assert list(got["labels"]) == [0, 0, 1] and list(got["classes"]) == ["a", "b"]
    assert got["features"].shape == (3, 512) and got["features"].dtype == np.float32
    # torchvision, from the export, on the same images through the exported description's transform
    enc = tmp_path / "enc.pt"
    assert main(["export", "--run-dir", str(runs / "w64"), "--format", "torchvision", "--out", str(enc)]) == 0
    net = torchvision.models.resnet18()
    net.fc, net.maxpool = nn.Identity(), nn.Identity()
    net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.load_state_dict(torch.load(enc, weights_only=True), strict=True)
    _, transform = load_encoder(runs / "w64")
    x = torch.stack([transform(Image.open(data / p).convert("RGB")) for p in got["paths"]])
    with torch.no_grad():
        assert cosine(net.eval()(x), torch.from_numpy(got["features"])).min() >= 0.9999
    # and the torch.export program, in a process that never imports this package
    program = tmp_path / "enc.pt2"
    assert main(["export", "--run-dir", str(runs / "w64"), "--format", "torch-export", "--out", str(program)]) == 0
    torch.save(x, tmp_path / "x.pt")
    script = (f"import sys, torch; m = torch.export.load({str(program)!r}).module(); "
              f"torch.save(m(torch.load({str(tmp_path / 'x.pt')!r})), {str(tmp_path / 'y.pt')!r}); "
              f"assert 'core' not in sys.modules")
    res = subprocess.run([sys.executable, "-I", "-c", script], capture_output=True, text=True, cwd=tmp_path,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    assert cosine(torch.load(tmp_path / "y.pt"), torch.from_numpy(got["features"])).min() >= 0.9999


def test_embed_of_a_nested_unlabelled_folder_and_bad_input(runs, tmp_path, capsys):
    import numpy as np

    data = tmp_path / "flat"
    write_images(data, ["2024/a.jpg", "2024/05/b.png", "c.png"])
    out = tmp_path / "emb.npz"
    assert main(["embed", "--run-dir", str(runs / "w8"), "--data-dir", str(data), "--out", str(out)]) == 0
    got = np.load(out)
    assert list(got["labels"]) == [-1, -1, -1] and list(got["classes"]) == []
    capsys.readouterr()
    (tmp_path / "empty").mkdir()
    for argv, message in ((["--data-dir", str(tmp_path / "empty")], "no images"),
                          (["--data-dir", str(tmp_path / "nope")], "is not a folder"),
                          (["--data-dir", str(data), "--checkpoint", "epoch_0009"], "does not exist"),
                          (["--data-dir", str(data), "--out", str(tmp_path / "x" / "e.npz")], "does not exist; create")):
        argv = ["embed", "--run-dir", str(runs / "w8"), *argv]
        if "--out" not in argv:
            argv += ["--out", str(tmp_path / "bad.npz")]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "bad.npz").exists() and not list(tmp_path.glob(".*.npz"))

"""A folder of small images is decoded by a pool of processes: the same tensor, labels and
warnings as one process, in index order, whatever the workers' timing."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from core.training import decode
from core.training.data import ImageSource


def test_workers_decode_what_one_process_decodes(tmp_path, monkeypatch, capsys):
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        d = tmp_path / "train" / c
        d.mkdir(parents=True)
        for i in range(600):  # 1,200 images: five chunks of 256
            Image.fromarray(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)).save(d / f"{i:04d}.png")
    (tmp_path / "train" / "a" / "0300.png").write_bytes(b"junk")  # one unreadable in the first chunk
    (tmp_path / "train" / "b" / "0550.png").write_bytes(b"junk")  # ... and one a worker meets
    source = ImageSource(tmp_path, "train")

    monkeypatch.setattr(decode, "CHUNK", 256)
    monkeypatch.setattr(decode, "decode_workers", lambda: 1)
    one = decode.decode_all(source, 8)
    alone = capsys.readouterr().err
    monkeypatch.setattr(decode, "decode_workers", lambda: 3)
    pooled = decode.decode_all(source, 8)
    assert alone == capsys.readouterr().err and "skipped 2 unreadable image(s)" in alone and "0300.png" in alone
    assert one[0].shape == (1198, 3, 8, 8) and torch.equal(one[0], pooled[0]) and torch.equal(one[1], pooled[1])
    assert one[1].tolist() == [0] * 599 + [1] * 599
    # an independent decode of one image: resized and centre-cropped as every other
    expected = np.array(decode.resize_square(source.open(700), 8))
    assert torch.equal(pooled[0][699].permute(1, 2, 0), torch.from_numpy(expected))  # 0300 was skipped before it

"""The picture commands of the fake runner (`views`, `neighbours`, `embed`), torch-free.

Each writes its `--out` file: a PNG whose colours follow its arguments (so other flags give
another picture), or an .npz of three labelled clusters (features, labels, classes, pca_2d), at --out or, as
`simclr embed --run-dir RUN` does, RUN/features/map-last.npz.
FAKE_PICTURE_LOG: append each command line to this file (JSON, one a line);
FAKE_PICTURE_SECONDS: wait this long first; FAKE_PICTURE_ERROR: fail with this one line.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time

import numpy as np
from PIL import Image


def main(argv: list[str]) -> int:
    if log := os.environ.get("FAKE_PICTURE_LOG"):
        with open(log, "a") as f:
            f.write(json.dumps(argv) + "\n")
    time.sleep(float(os.environ.get("FAKE_PICTURE_SECONDS", "0")))
    if error := os.environ.get("FAKE_PICTURE_ERROR"):
        print("loading the data…")
        print(f"simclr: error: {error}", file=sys.stderr)
        return 2
    if "--out" in argv:
        out = argv[argv.index("--out") + 1]
    else:  # embed's default: the run's features/map-last.npz
        out = os.path.join(argv[argv.index("--run-dir") + 1], "features", "map-last.npz")
        os.makedirs(os.path.dirname(out), exist_ok=True)
    args = [a for a in argv if a != out]
    if argv[0] == "embed":
        rng = np.random.default_rng(0)
        centres = np.array([[0, 0, 0, 0], [6, 0, 1, 0], [0, 6, 0, 1]], dtype=np.float32)
        labels = np.repeat(np.arange(3), 50)
        features = centres[labels] + rng.normal(size=(150, 4)).astype(np.float32)
        with open(out, "wb") as f:  # np.savez would add .npz to a name without it
            np.savez(f, features=features, labels=labels, classes=np.array(["cat", "dog", "ship"]),
                     pca_2d=features[:, :2])
        return 0
    digest = hashlib.sha1(" ".join(args).encode()).digest()
    pixels = np.zeros((48, 64, 3), dtype=np.uint8)
    pixels[:, :32] = list(digest[:3])
    pixels[:, 32:] = list(digest[3:6])
    with open(out, "wb") as f:
        Image.fromarray(pixels).save(f, format="PNG")
    return 0

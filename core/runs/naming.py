"""Names: of runs (one path component inside the runs directory), of checkpoints, and of
evaluation jobs (``NAME/eval/<job>/`` and its result ``NAME/eval/<job>.json``).

The runner, the queue, the CLI and the TUI all name things through these, so a folder one
of them makes is the folder another looks for.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from core.errors import RunNameError

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=,-]{0,99}$")
_CHECKPOINT_RE = re.compile(r"(last|epoch_\d{4,})")
#: folders of the runs directory that are not runs (the queue's own, `.queue`, cannot be a name anyway)
RESERVED_NAMES = ("exports",)


def job_result_path(job_dir: Path) -> Path:
    """An evaluation job's result file, beside its folder: NAME/eval/<job>/ -> NAME/eval/<job>.json.

    Not ``with_suffix``: job names hold dots (``finetune-0.1-last``).
    """
    return job_dir.parent / f"{job_dir.name}.json"


def eval_job_name(kind: str, checkpoint: str, dataset_tag: str | None = None,
                  label_fraction: float | None = None) -> str:
    """The folder of an evaluation job under NAME/eval/ (and its result NAME/eval/<job>.json).

    ``linear-last``, ``knn-cifar100-epoch_0010`` (another dataset), ``finetune-0.1-last``
    (the label fraction written as ``repr(float)``). The runner and the TUI both use this.
    """
    if kind == "finetune":
        if label_fraction is None:
            raise ValueError("a fine-tuning job needs its label fraction")
        kind = f"finetune-{float(label_fraction)!r}"
    return "-".join(p for p in (kind, dataset_tag, checkpoint) if p)


def eval_dataset_tag(own_dataset: str, own_data_dir: str, dataset: str | None, data_dir: str | None) -> str | None:
    """The ``<dataset>`` part of a job name: None when the job evaluates the run's own data,
    else the other dataset's name (a folder's own name), made safe for a file name."""
    dataset, data_dir = dataset or own_dataset, data_dir or own_data_dir
    same_dir = Path(data_dir).resolve() == Path(own_data_dir).resolve()
    if dataset == own_dataset and (dataset != "folder" or same_dir):
        return None
    return re.sub(r"[^A-Za-z0-9._]+", "_", Path(data_dir).name if dataset == "folder" else dataset)


def check_checkpoint_name(name: str) -> str:
    """``last`` or ``epoch_NNNN``: a file in the run's checkpoints/, never a path elsewhere."""
    if not _CHECKPOINT_RE.fullmatch(name):
        raise RunNameError(f"--checkpoint must be last or epoch_NNNN (got {name!r})")
    return name


def check_run_name(name: str) -> str:
    """A run name is one path component of letters, digits, '.', '_' and '-'."""
    # fullmatch: with match(), "$" also matches before a trailing newline ("x\n" got in)
    if name in RESERVED_NAMES:
        raise RunNameError(f"run name {name!r} is reserved: the TUI writes its exports to runs/{name}/; choose another")
    if not _NAME_RE.fullmatch(name) or name in (".", "..") or ".." in name:
        raise RunNameError(f"run name {name!r} is not allowed: use letters, digits, '.', '_', '-', '=' and ',' "
                         f"(at most 100, starting with a letter or digit; no '/' or '..')")
    return name


def resolve_run_dir(runs_dir: str | Path, name: str) -> Path:
    """runs_dir/name, guaranteed to stay inside runs_dir."""
    check_run_name(name)
    root = Path(runs_dir).resolve()
    path = (root / name).resolve()
    if path.parent != root:
        raise RunNameError(f"run name {name!r} escapes the runs directory {root}")
    return path


def generate_run_name(runs_dir: str | Path, dataset: str, backbone: str) -> str:
    """A readable, unique name such as ``cifar10-resnet18-1128-1505``."""
    stamp = time.strftime("%m%d-%H%M%S")
    base = f"{dataset}-{backbone}-{stamp}"
    name, i = base, 2
    while (Path(runs_dir) / name).exists():
        name, i = f"{base}-{i}", i + 1
    return name


def claim_run_dir(runs_dir: str | Path, dataset: str, backbone: str) -> Path:
    """Create a new run directory with a generated name and return it.

    ``mkdir`` is atomic: of several launches in the same second (a sweep started from a
    shell loop) each gets its own directory, where a name merely checked to be free would
    be given to all of them.
    """
    root = Path(runs_dir)
    root.mkdir(parents=True, exist_ok=True)
    while True:
        path = root / generate_run_name(root, dataset, backbone)
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue  # taken between the check and the mkdir: the next name

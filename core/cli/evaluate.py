"""`simclr linear-eval | finetune | knn | baseline | results`: the evaluation commands.

``core.cli.build_parser`` calls ``add_commands(subparsers)``. Same conventions as ``simclr pretrain``:
bad input is one line ``simclr: error: ...`` and exit code 2, with nothing written; every
check that can be made before the job starts is made here. A failure while running marks
the job ``failed`` in its status.json and exits 1; a stop (SIGTERM/SIGINT) exits 0.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import UsageError
from core.config import BACKBONES, DATASETS, PretrainConfig, dash
from core.jobs.launch import add_launcher_flags, slurm_options
from core.runs import check_checkpoint_name, check_run_name, eval_dataset_tag, eval_job_name, read_json
from core.evaluation.baselines import BASELINES, baseline_of
from core.evaluation.settings import L2_GRID, PROTOCOLS, LinearSettings

#: chosen by measurement (docs/EVALUATION.md): higher test accuracy in less time than the seed's Adam
DEFAULT_PROTOCOL = "lbfgs"


def _usage(msg: str) -> Exception:
    return UsageError(msg)


# ---------------------------------------------------------------------- flags
def _config_help(name: str) -> str:
    from dataclasses import fields
    return next(f.metadata.get("help", "") for f in fields(PretrainConfig) if f.name == name)


def add_target_flags(p: argparse.ArgumentParser, other_data: bool) -> None:
    p.add_argument("--run-dir", required=True, help="the run directory to evaluate (runs/NAME)")
    p.add_argument("--checkpoint", default="last",
                   help="last (default) or epoch_NNNN, a file in the run's checkpoints/")
    if other_data:
        p.add_argument("--dataset", choices=DATASETS, help="evaluate on this dataset instead of the run's own")
        p.add_argument("--data-dir", help="its data directory (default: the run's --data-dir)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--workers", type=int, help="DataLoader workers for large images (default: the run's)")
    p.add_argument("--no-ema", dest="prefer_ema", action="store_false",
                   help="use the online encoder even when the run kept an EMA of it")


def add_linear_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--protocol", choices=PROTOCOLS, default=DEFAULT_PROTOCOL,
                   help="lbfgs: standardised features, L2-regularised logistic regression by full-batch "
                        "L-BFGS, L2 chosen on 10%% of train; adam: the seed's (Adam lr 3e-4, batch 256); default: "
                        f"{DEFAULT_PROTOCOL}, the faster and more accurate, measured in docs/EVALUATION.md")
    p.add_argument("--l2", type=float, help=f"lbfgs: fixed L2 strength (default: the best of "
                                            f"{', '.join(f'{v:g}' for v in L2_GRID)} on held-out train)")
    p.add_argument("--max-iter", type=int, default=1000, help="lbfgs: most L-BFGS iterations per fit (default: 1000)")
    p.add_argument("--epochs", type=int, default=500,
                   help="adam: epochs over the train features (default: the seed's 500)")
    p.add_argument("--batch-size", type=int, default=256, help="adam: batch size (default: 256)")
    p.add_argument("--lr", type=float, default=3e-4, help="adam: learning rate (default: 3e-4)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the held-out split, or of the Adam init and order (default: 0)")


def add_commands(sub) -> None:
    """Register the evaluation subcommands on ``simclr``'s subparsers."""
    p = sub.add_parser("linear-eval", help="linear classifier on frozen features",
                       description="Linear evaluation: a linear classifier on the frozen encoder's features "
                                   "(cached in the run's features/); writes eval/linear-<checkpoint>.json.")
    add_target_flags(p, other_data=True)
    add_linear_flags(p)
    add_launcher_flags(p)
    p.set_defaults(func=cmd_linear_eval)

    p = sub.add_parser("knn", help="weighted kNN accuracy on frozen features",
                       description="Weighted kNN (cosine, votes exp(s/T)) of every test image against all "
                                   "train images; writes eval/knn-<checkpoint>.json.")
    add_target_flags(p, other_data=True)
    p.add_argument("--k", type=int, default=200, help="neighbours (default: 200)")
    p.add_argument("--temperature", type=float, default=0.1, help="vote temperature T (default: 0.1)")
    p.add_argument("--projector", action="store_true",
                   help="then write the test embedding for TensorBoard's Projector tab and the TUI's map, from the "
                        "features this evaluation computed (as `simclr embed --run-dir R --tensorboard`)")
    add_launcher_flags(p)
    p.set_defaults(func=cmd_knn)

    p = sub.add_parser("finetune", help="fine-tune encoder + linear head on a label subset",
                       description="Fine-tune the whole encoder and a linear head on a class-balanced "
                                   "fraction of the labels (crop + flip, SGD-Nesterov, cosine); writes "
                                   "eval/finetune-<fraction>-<checkpoint>.json.")
    add_target_flags(p, other_data=False)
    p.add_argument("--label-fraction", type=float, required=True,
                   help="fraction of each class's training labels to use, e.g. 0.01, 0.1 or 1.0")
    p.add_argument("--epochs", type=int, help="epochs over the subset (default: 60 for 1%%, 30 for 10%%, 15 above)")
    p.add_argument("--batch-size", type=int, default=256, help="batch size (default: 256)")
    p.add_argument("--lr", type=float, help="peak learning rate (default: 0.05 x batch/256)")
    p.add_argument("--weight-decay", type=float, default=0.0, help="weight decay (default: 0, as the paper)")
    p.add_argument("--eval-every", type=int, help="score the test set every N epochs for the live curve "
                                                   "(default: about 10 times per run)")
    p.add_argument("--seed", type=int, default=0, help="seed of the label subset, order and augmentation (default: 0)")
    add_launcher_flags(p)
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("baseline", help="raw-pixel or random-encoder baseline run",
                       description="Create a baseline run directory and run linear evaluation on it: "
                                   "raw-pixels (logistic regression on pixels) or random-encoder (the "
                                   "architecture at its random init, saved as checkpoints/last.pt).")
    p.add_argument("which", choices=BASELINES, help="which baseline")
    p.add_argument("--run-dir", required=True, help="the baseline's new run directory (runs/NAME)")
    p.add_argument("--like", metavar="RUN_DIR", help="copy data and architecture from this run's config.json")
    for name in ("dataset", "data_dir", "backbone", "width", "image_size", "projection_dim"):
        kind = int if name in ("width", "image_size", "projection_dim") else str
        choices = {"dataset": DATASETS, "backbone": BACKBONES}.get(name)
        p.add_argument(f"--{dash(name)}", type=kind, choices=choices, help=_config_help(name))
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument("--workers", type=int, help="DataLoader workers for large images")
    add_linear_flags(p)
    p.set_defaults(func=cmd_baseline)

    p = sub.add_parser("results", help="results table over all evaluated runs",
                       description="One table of every finished evaluation, in the seed's format; with "
                                   "--group-by, one row per setting: mean ± sample std (n-1) over its seeds.")
    p.add_argument("--runs-dir", default="runs", help="the runs directory (default: runs)")
    p.add_argument("--group-by", choices=("sweep", "config"),
                   help="one row per setting and job: sweep (runs of `simclr sweep`, by swept values) or "
                        "config (every run, by config.json); runs differing only in seed, device, workers share a row")
    p.add_argument("--format", choices=("markdown", "csv", "json", "latex"), default="markdown",
                   help="output format (default: markdown)")
    p.set_defaults(func=cmd_results)


# ---------------------------------------------------------------------- checks (exit 2)
@dataclass
class Target:
    """A checked evaluation target: the run, its config (with any data override) and device."""

    run_dir: Path
    checkpoint: str
    cfg: PretrainConfig
    baseline: str | None
    dataset_tag: str | None
    device: Any
    workers: int
    prefer_ema: bool


def run_config(run_dir: Path) -> PretrainConfig:
    data = read_json(run_dir / "config.json")
    if data is None:
        raise _usage(f"{run_dir} is not a run directory (no readable config.json); "
                     f"give --run-dir runs/NAME of a run made by `simclr pretrain` or `simclr baseline`")
    return PretrainConfig.from_dict(data)


def check_data(cfg: PretrainConfig, images_needed: bool = True) -> None:
    """The data an evaluation reads is there (``images_needed``: not only cached features)."""
    from core.training.data import ensure_downloaded, has_test_split
    if cfg.dataset == "folder" and not Path(cfg.data_dir).exists():
        raise _usage(f"--data-dir {cfg.data_dir} does not exist; point it at the folder (or .zip) of class folders")
    if not has_test_split(cfg.dataset, cfg.data_dir):
        raise _usage(f"{cfg.data_dir} has no test split (test/ or val/, or test.zip): evaluation needs "
                     f"held-out labelled images that training never saw")
    if images_needed:
        ensure_downloaded(cfg.dataset, cfg.data_dir)


def _other_checkpoint(run_dir: Path) -> str:
    """What to evaluate instead of an unreadable checkpoint."""
    from core.training.checkpoint import epoch_checkpoints
    saved = [p.stem for p in epoch_checkpoints(run_dir)]
    if saved:
        return f"evaluate another one with --checkpoint epoch_NNNN (saved: {', '.join(saved[-3:])})"
    return f"there is no epoch_NNNN.pt in {run_dir / 'checkpoints'} to evaluate instead: train again"


def resolve_target(args: argparse.Namespace, kind: str, label_fraction: float | None = None) -> Target:
    """Every check that can fail on bad input, before anything is written."""
    from core.training.checkpoint import checkpoint_path, load_checkpoint
    from core.training.device import pick_device
    from core.evaluation.job import job_is_live

    run_dir = Path(args.run_dir)
    own = run_config(run_dir)
    baseline = baseline_of(run_dir)
    try:
        check_checkpoint_name(args.checkpoint)
    except ValueError as e:
        raise _usage(str(e)) from None
    if baseline == "raw-pixels":
        if args.checkpoint != "last":
            raise _usage(f"{run_dir} is the raw-pixels baseline: it has no checkpoints, use --checkpoint last")
    elif not (ckpt := checkpoint_path(run_dir, args.checkpoint)).is_file():
        raise _usage(f"{ckpt} does not exist; list {run_dir / 'checkpoints'} or train first")
    else:  # whole and ours, checked without reading its tensors
        load_checkpoint(ckpt, mmap=True, hint=_other_checkpoint(run_dir))
    cfg, tag = own, None
    dataset, data_dir = getattr(args, "dataset", None), getattr(args, "data_dir", None)
    if dataset or data_dir:
        if dataset and dataset != own.dataset and dataset == "folder" and not data_dir:
            raise _usage("--dataset folder needs --data-dir (a folder or .zip of class folders)")
        cfg = own.replace(dataset=dataset or own.dataset, data_dir=data_dir or own.data_dir)
        tag = eval_dataset_tag(own.dataset, own.data_dir, dataset, data_dir)
    cfg = cfg.replace(device=args.device)
    cfg.validate()
    device = pick_device(cfg)
    # linear-eval and knn of a checkpoint whose features are cached read no images
    from core.evaluation.features import FeatureSource
    source = FeatureSource(run_dir, args.checkpoint, cfg, device, dataset_tag=tag)
    cached = kind in ("linear", "knn") and baseline != "raw-pixels" and all(
        source.cache_file(split).is_file() for split in ("train", "test"))
    check_data(cfg, images_needed=not cached)
    workers = own.workers if args.workers is None else args.workers
    if workers < 0:
        raise _usage(f"--workers must not be negative (got {workers})")
    name = eval_job_name(kind, args.checkpoint, tag, label_fraction)
    live = job_is_live(run_dir, name)
    if live:
        raise _usage(f"{run_dir / 'eval' / name} is running (pid {live.get('pid')}); stop it first")
    return Target(run_dir, args.checkpoint, cfg, baseline, tag, device, workers,
                  getattr(args, "prefer_ema", True))


def linear_settings(args: argparse.Namespace) -> LinearSettings:
    if args.max_iter < 1:
        raise _usage(f"--max-iter must be at least 1 (got {args.max_iter})")
    if args.epochs < 1:
        raise _usage(f"--epochs must be at least 1 (got {args.epochs})")
    if args.batch_size < 1:
        raise _usage(f"--batch-size must be at least 1 (got {args.batch_size})")
    if not args.lr > 0:
        raise _usage(f"--lr must be positive (got {args.lr})")
    if args.l2 is not None and not args.l2 >= 0:
        raise _usage(f"--l2 must not be negative (got {args.l2})")
    return LinearSettings(protocol=args.protocol, l2=args.l2, max_iter=args.max_iter, epochs=args.epochs,
                          batch_size=args.batch_size, lr=args.lr, seed=args.seed)


def feature_source(t: Target):
    from core.evaluation.features import FeatureSource
    return FeatureSource(t.run_dir, t.checkpoint, t.cfg, t.device, prefer_ema=t.prefer_ema,
                         pixels=t.baseline == "raw-pixels", dataset_tag=t.dataset_tag, workers=t.workers)


# ---------------------------------------------------------------------- commands
def submitted(args: argparse.Namespace, t: Target, job: str) -> bool:
    """With --launcher slurm: the checked job goes to Slurm (``R/eval/<job>/`` queued) instead of
    running here; without --slurm-* flags it asks for what the run's own job asked for."""
    opts = slurm_options(args, inherit=t.run_dir)
    if opts is None:
        return False
    from core.jobs.launch import strip_launcher_flags, submit_eval
    from core.jobs.slurm import available

    if available():
        raise _usage(available())
    argv = strip_launcher_flags(list(args.argv))
    # the job starts elsewhere: the run it evaluates, by its absolute path
    argv = [a if a != args.run_dir else str(t.run_dir.absolute()) for a in argv]
    job_id = submit_eval(t.run_dir, job, args.command, t.checkpoint, argv, opts)
    print(f"submitted Slurm job {job_id}: {t.run_dir / 'eval' / job} (queued); follow it with `simclr runs` or "
          f"simclr-tui; stop it with `simclr stop --run-dir {t.run_dir / 'eval' / job}`")
    return True


def cmd_linear_eval(args: argparse.Namespace) -> int:
    t = resolve_target(args, "linear")
    s = linear_settings(args)
    if submitted(args, t, eval_job_name("linear", t.checkpoint, t.dataset_tag)):
        return 0
    return _run_linear(t, s)


def _run_linear(t: Target, s: LinearSettings) -> int:
    from core.evaluation.frozen import linear_eval
    from core.evaluation.job import EvalJob

    source = feature_source(t)
    job = EvalJob(t.run_dir, eval_job_name("linear", t.checkpoint, t.dataset_tag), "linear-eval", t.checkpoint)
    return job.run(lambda j: linear_eval(j, source, s))


def cmd_knn(args: argparse.Namespace) -> int:
    from core.evaluation.frozen import knn_eval
    from core.evaluation.job import EvalJob

    if args.k < 1:
        raise _usage(f"--k must be at least 1 (got {args.k})")
    if not args.temperature > 0:
        raise _usage(f"--temperature must be positive (got {args.temperature})")
    if args.projector and (getattr(args, "dataset", None) or getattr(args, "data_dir", None)):
        raise UsageError("--projector maps the run's own test split; leave out --dataset/--data-dir, or use "
                         "`simclr embed --run-dir R --data-dir D --tensorboard` for another folder")
    t = resolve_target(args, "knn")
    if submitted(args, t, eval_job_name("knn", t.checkpoint, t.dataset_tag)):
        return 0
    source = feature_source(t)
    job = EvalJob(t.run_dir, eval_job_name("knn", t.checkpoint, t.dataset_tag), "knn", t.checkpoint)
    if args.projector:
        from core.evaluation.embed import embed

        job.when_finished("write the test embedding for TensorBoard's projector",
                          lambda res: embed(t.run_dir, None, None, t.checkpoint, None if t.prefer_ema else False,
                                            tensorboard=True, split="test", device=str(source.device), say=job.say))
    return job.run(lambda j: knn_eval(j, source, args.k, args.temperature))


def cmd_finetune(args: argparse.Namespace) -> int:
    from core.evaluation.finetune import FinetuneSettings, default_epochs, finetune
    from core.evaluation.job import EvalJob

    f = args.label_fraction
    if not 0 < f <= 1:
        raise _usage(f"--label-fraction must be in (0, 1], e.g. 0.01, 0.1 or 1.0 (got {f})")
    epochs = default_epochs(f) if args.epochs is None else args.epochs
    for flag, value, low in (("--epochs", epochs, 1), ("--batch-size", args.batch_size, 1),
                             ("--eval-every", args.eval_every, 1)):
        if value is not None and value < low:
            raise _usage(f"{flag} must be at least {low} (got {value})")
    if args.lr is not None and not args.lr > 0:
        raise _usage(f"--lr must be positive (got {args.lr})")
    if not args.weight_decay >= 0:
        raise _usage(f"--weight-decay must not be negative (got {args.weight_decay})")
    t = resolve_target(args, "finetune", f)
    if t.baseline == "raw-pixels":
        raise _usage(f"{t.run_dir} is the raw-pixels baseline: there is no encoder to fine-tune")
    s = FinetuneSettings(label_fraction=f, epochs=epochs, batch_size=args.batch_size, lr=args.lr,
                         weight_decay=args.weight_decay, seed=args.seed,
                         eval_every=args.eval_every or max(1, epochs // 10))
    if submitted(args, t, eval_job_name("finetune", t.checkpoint, label_fraction=f)):
        return 0
    source = feature_source(t)
    job = EvalJob(t.run_dir, eval_job_name("finetune", t.checkpoint, label_fraction=f), "finetune", t.checkpoint)
    return job.run(lambda j: finetune(j, source, s))


def cmd_baseline(args: argparse.Namespace) -> int:
    from core.evaluation.baselines import create_baseline

    run_dir = Path(args.run_dir)
    check_run_name(run_dir.name)
    if run_dir.exists() and any(run_dir.iterdir()):
        raise _usage(f"{run_dir} already exists and is not empty; choose another --run-dir")
    base = run_config(Path(args.like)) if args.like else PretrainConfig()
    given = {n: getattr(args, n) for n in ("dataset", "data_dir", "backbone", "width", "image_size",
                                           "projection_dim") if getattr(args, n) is not None}
    # the config of a run that never trained: no knn monitor, no checkpoints beyond last
    cfg = base.replace(**given, knn_every=0, checkpoint_every=0, device=args.device).validate()
    check_data(cfg)
    s = linear_settings(args)
    from core.training.device import pick_device
    device = pick_device(cfg)
    workers = cfg.workers if args.workers is None else args.workers
    create_baseline(run_dir, args.which, cfg.replace(device="auto"), argv=sys.argv)
    return _run_linear(Target(run_dir, "last", cfg, args.which, None, device, workers, True), s)


def cmd_results(args: argparse.Namespace) -> int:
    from core.evaluation.results import collect, collect_pruned, groups, render, rows

    if not Path(args.runs_dir).is_dir():
        raise _usage(f"--runs-dir {args.runs_dir} does not exist")
    found = collect(args.runs_dir)
    records = groups(found, args.group_by, collect_pruned(args.runs_dir)) if args.group_by else rows(found)
    if not records:
        print(f"no finished evaluations of sweep runs in {args.runs_dir}; `simclr sweep` makes them, or use "
              f"--group-by config" if found else
              f"no finished evaluations in {args.runs_dir}; run `simclr linear-eval --run-dir ...` first",
              file=sys.stderr)
        if args.format == "json":
            print("[]")  # a script reads an empty list, not an empty output
        return 0
    sys.stdout.write(render(records, args.format))
    return 0

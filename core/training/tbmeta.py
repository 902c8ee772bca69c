"""What a run tells TensorBoard beyond its curves: one row of the HParams dashboard and
its Text tab (config, note and tags).

TensorBoard's hparams plugin keeps, per run and tag, the *first* summary it reads: within a
file the first written, across files the one in the file whose name sorts first, whichever
was written last (measured with both of TensorBoard 2.21's loaders; tests/test_tensorboard_hparams.py).
So the run's hparams cannot be written again into its curves: the start's would win and the
end (``pruned``, the session's status) would never show. They live instead in one file of
their own, :data:`HPARAMS_FILE`, whose name sorts before every ``SummaryWriter`` file and which
is rewritten whole (temp file, rename) from the run directory's files each time something
changes: the runner at its start and end (``core.training.runlog``), an evaluation job at its
end (``core.evaluation.job``). A fresh ``tensorboard --logdir runs`` shows the latest; one
already running keeps what it read first until it is restarted.

The HParams metrics are scalars of the run's own folder (so a run stays one row): the kNN
monitor's ``knn/top1``, the health scalars, and ``eval/*_top1``, which an evaluation job adds
to the run's folder with :func:`add_eval_result`. docs/RUN_DIRECTORY.md, "TensorBoard".

Lazy about tensorboard (imported inside the functions that write), as ``core.training.joblog``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any, get_type_hints

from core.config import PretrainConfig, base_type, coerce
from core.errors import ConfigError
from core.runs import eval_job_name, read_json, read_notes, read_sweep
from core.runs.state import LIVE_STATES, effective_state

#: sorts before ``events.out.tfevents.<10-digit time>...`` (every SummaryWriter's file), so its
#: summaries are the ones TensorBoard keeps
HPARAMS_FILE = "events.out.tfevents.0000000000.hparams"

#: the metric columns: scalar tags of the run's own folder, the last value shown
METRICS = ("knn/top1", "eval/linear_top1", "eval/finetune_top1", "eval/knn_top1",
           "health/std", "health/alignment", "health/uniformity", "health/loss_vs_chance")

#: an evaluation job's kind -> the scalar its test top-1 becomes in the run's folder
EVAL_TAGS = {"linear-eval": "eval/linear_top1", "finetune": "eval/finetune_top1", "knn": "eval/knn_top1"}

#: what an Optional config value of None is in its (string) column
NONE = "none"


# ---------------------------------------------------------------------- the row
def columns() -> dict[str, str]:
    """Every hparam column and its type (``string``, ``float`` or ``bool``): every PretrainConfig
    field, then ``sweep`` and ``pruned``. The same for every run, so a sweep's columns line up.

    A column's type follows the field's annotation, never a run's value: int and float are
    ``float``, bool ``bool``, str and choices ``string``, and an Optional field (``max_steps``,
    ``ema`` ...) ``string`` (its value as JSON, ``"none"`` for None)."""
    out = {}
    for name, tp in get_type_hints(PretrainConfig).items():
        kind, optional = base_type(tp)
        out[name] = "string" if optional or kind is str else "bool" if kind is bool else "float"
    return {**out, "sweep": "string", "pruned": "bool"}


def run_config(run_dir: Path) -> dict[str, Any]:
    """config.json read as the runner would: every field, a missing or unreadable value its default."""
    data = read_json(run_dir / "config.json") or {}
    hints = get_type_hints(PretrainConfig)
    out = {}
    for f in dataclasses.fields(PretrainConfig):
        default = PretrainConfig.__dataclass_fields__[f.name].default
        try:
            out[f.name] = coerce(f.name, data[f.name], hints[f.name]) if f.name in data else default
        except ConfigError:
            out[f.name] = default
    return out


def hparams(run_dir: str | Path) -> dict[str, str | float | bool]:
    """The run's hparams row, typed as :func:`columns` says: config.json, ``sweep`` (sweep.json's
    name, ``""`` outside a sweep) and ``pruned`` (status.json's state is ``pruned``)."""
    run_dir = Path(run_dir)
    cfg, types = run_config(run_dir), columns()
    row: dict[str, str | float | bool] = {}
    for name, value in cfg.items():
        if types[name] == "string":
            row[name] = value if isinstance(value, str) else NONE if value is None else json.dumps(value)
        else:
            row[name] = bool(value) if types[name] == "bool" else float(value)
    sweep = read_sweep(run_dir)
    row["sweep"] = sweep["sweep"] if sweep else ""
    row["pruned"] = (read_json(run_dir / "status.json") or {}).get("state") == "pruned"
    return row


def config_markdown(run_dir: Path) -> str:
    """config.json as a two-column markdown table (the Text tab's ``config``)."""
    data = read_json(run_dir / "config.json") or {}
    rows = [f"| {k} | {json.dumps(v).replace('|', '&#124;')} |" for k, v in sorted(data.items())]
    return "\n".join(["| key | value |", "| --- | --- |", *rows])


def notes_markdown(run_dir: Path) -> str:
    """The run's note, tags and sweep place as markdown (the Text tab's ``notes``)."""
    note, tags = read_notes(run_dir)
    sweep = read_sweep(run_dir)
    lines = [note or "*(no note)*", "", "tags: " + (", ".join(f"`{t}`" for t in tags) if tags else "*(none)*")]
    if sweep:
        swept = ", ".join(f"{k}={json.dumps(v)}" for k, v in sweep["swept"].items())
        lines += ["", f"sweep: `{sweep['sweep']}` #{sweep['index']}" + (f" ({swept})" if swept else "")]
    return "\n".join(lines)


# ---------------------------------------------------------------------- writing it
def write(run_dir: str | Path) -> Path | None:
    """(Re)write the run's :data:`HPARAMS_FILE` from its files now: the experiment (columns and
    metrics), the session's start (its hparams) and, once the run is no longer live, its end,
    and the Text tab's ``config`` and ``notes``. Atomic; the file, or None for a folder
    without a config.json (not a run)."""
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.plugins.hparams import api_pb2, metadata
    from tensorboard.plugins.hparams import plugin_data_pb2 as pd
    from tensorboard.plugins.text import metadata as text_metadata
    from tensorboard.summary.writer.record_writer import RecordWriter
    from tensorboard.util import tensor_util

    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        return None
    types = {"string": api_pb2.DATA_TYPE_STRING, "float": api_pb2.DATA_TYPE_FLOAT64, "bool": api_pb2.DATA_TYPE_BOOL}
    status = read_json(run_dir / "status.json") or {}
    now = time.time()

    def hp(tag: str, **data: Any) -> Summary:
        meta = metadata.create_summary_metadata(pd.HParamsPluginData(**data))
        return Summary(value=[Summary.Value(tag=tag, metadata=meta, tensor=metadata.NULL_TENSOR)])

    def text(tag: str, markdown: str) -> Summary:
        return Summary(value=[Summary.Value(tag=tag, metadata=text_metadata.create_summary_metadata(None, None),
                                            tensor=tensor_util.make_tensor_proto(markdown))])

    experiment = api_pb2.Experiment(
        hparam_infos=[api_pb2.HParamInfo(name=k, type=types[t]) for k, t in columns().items()],
        metric_infos=[api_pb2.MetricInfo(name=api_pb2.MetricName(tag=m)) for m in METRICS])
    start = pd.SessionStartInfo(start_time_secs=_number(status.get("created"), now))
    for name, value in hparams(run_dir).items():
        if isinstance(value, bool):
            start.hparams[name].bool_value = value
        elif isinstance(value, float):
            start.hparams[name].number_value = value
        else:
            start.hparams[name].string_value = value
    summaries = [hp(metadata.EXPERIMENT_TAG, experiment=experiment),
                 hp(metadata.SESSION_START_INFO_TAG, session_start_info=start)]
    ended = session_status(status)
    if ended is not None:
        end = pd.SessionEndInfo(status=ended, end_time_secs=_number(status.get("heartbeat"), now))
        summaries.append(hp(metadata.SESSION_END_INFO_TAG, session_end_info=end))
    summaries += [text("config", config_markdown(run_dir)), text("notes", notes_markdown(run_dir))]

    path = run_dir / HPARAMS_FILE
    tmp = run_dir / f".tbmeta.{os.getpid()}.tmp"  # no "tfevents" in it: TensorBoard never reads it half-written
    try:
        with open(tmp, "wb") as f:
            records = RecordWriter(f)
            records.write(Event(wall_time=now, file_version="brain.Event:2").SerializeToString())
            for summary in summaries:
                records.write(Event(wall_time=now, step=0, summary=summary).SerializeToString())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def session_status(status: dict[str, Any]) -> int | None:
    """The HParams session status of a run's status.json, or None while it has not ended:
    finished -> SUCCESS; failed, crashed (a live state whose process is gone) -> FAILURE; any
    other state string (stopped, pruned, one added later) -> UNKNOWN, the ``pruned`` column
    and `simclr runs` telling them apart."""
    from tensorboard.plugins.hparams import api_pb2

    state = status.get("state")
    if not isinstance(state, str):
        return None
    if state in (*LIVE_STATES, "queued"):
        state = effective_state(status)
        if state in (*LIVE_STATES, "queued"):
            return None
    return {"finished": api_pb2.STATUS_SUCCESS, "failed": api_pb2.STATUS_FAILURE,
            "crashed": api_pb2.STATUS_FAILURE}.get(state, api_pb2.STATUS_UNKNOWN)


def _number(value: Any, default: float) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else default


# ---------------------------------------------------------------------- an evaluation's number
def eval_tag(kind: str, job: str, checkpoint: str) -> str | None:
    """The scalar an evaluation job's test top-1 becomes in its run's folder, or None for a job
    on another dataset than the run's own (``knn-cifar100-last``: not this run's number)."""
    tag = EVAL_TAGS.get(kind)
    if tag is None or (kind != "finetune" and job != eval_job_name("knn" if kind == "knn" else "linear", checkpoint)):
        return None
    return tag


def add_eval_result(run_dir: str | Path, kind: str, job: str, checkpoint: str, result: dict[str, Any]) -> str | None:
    """Add a finished evaluation's test top-1 to the run's own TensorBoard folder (a new event
    file there, at the evaluated checkpoint's pretraining step), so the HParams row of the run
    shows it; returns the tag, or None when the job's number is not the run's (:func:`eval_tag`)."""
    tag, value = eval_tag(kind, job, checkpoint), result.get("test_top1")
    if tag is None or not isinstance(value, (int, float)):
        return None
    from torch.utils.tensorboard import SummaryWriter

    step = result.get("pretrain_step")
    with SummaryWriter(str(run_dir)) as tb:
        tb.add_scalar(tag, float(value), step if isinstance(step, int) else 0)
    return tag

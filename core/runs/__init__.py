"""The run directory: the on-disk contract between the runner, the queue, the launchers, the
TUI and TensorBoard (docs/RUN_DIRECTORY.md). Plain Python, no torch.

Each file of a run directory has one module that writes it and one that parses it:

    file                       module                 what it holds
    status.json                core.runs.status       the typed record; every change through update_status
    (the state shown)          core.runs.state        the state machine: the states, who writes which, decide()
    metrics.jsonl              core.runs.metrics      MetricsWriter, read_metrics, truncate_metrics_after
    notes.json, sweep.json     core.runs.notes        a person's note and tags; reading a sweep member's
                                                      place (written by core.jobs.queue / launch)
    stdout.log                 core.runs.output       tee_to (the runner's own output); core.process (started jobs)
    names, eval/<job>/         core.runs.naming       run, checkpoint and evaluation-job names; claiming
    the runs directory         core.runs.listing      iter_runs / RunInfo (one read per run), holding
    any JSON file              core.runs.files        atomic replace, tolerant reads, the folder lock

A runner or evaluation job writes its own status.json and metrics.jsonl through these, via
core.training.joblog.JobLog. Files written by other layers: config.json and meta.json (the
runner, core.training.runlog),
checkpoints/ (core.training.checkpoint), queue.json (core.jobs.queue), slurm.json and
slurm.sh (core.jobs.slurm), eval/<job>.json (core.evaluation.job).
"""

from core.process import alive as process_alive
from core.process import start_time as process_start_time
from core.runs.files import atomic_write_json, atomic_write_text, folder_lock, number, read_json
from core.runs.listing import PRE_START_FILES, RunInfo, hold_run_dir, is_unstarted, iter_runs, list_jobs, read_run
from core.runs.metrics import MetricsWriter, read_metrics, read_metrics_chunk, truncate_metrics_after
from core.runs.naming import (
    RESERVED_NAMES,
    check_checkpoint_name,
    check_run_name,
    claim_run_dir,
    eval_dataset_tag,
    eval_job_name,
    generate_run_name,
    job_result_path,
    resolve_run_dir,
)
from core.runs.notes import clean_tags, read_notes, read_sweep, write_notes
from core.runs.state import LIVE_STATES, STALE_AFTER, STATES, Reading, decide, effective_state
from core.runs.status import Status, StatusFile, queued_record, read_status, update_status
from core.errors import RunBusyError

__all__ = [
    "PRE_START_FILES", "RESERVED_NAMES", "LIVE_STATES", "STALE_AFTER", "STATES", "MetricsWriter", "Reading",
    "RunBusyError", "RunInfo", "Status", "StatusFile", "atomic_write_json", "atomic_write_text", "check_checkpoint_name",
    "check_run_name", "claim_run_dir", "clean_tags", "decide", "effective_state", "eval_dataset_tag", "eval_job_name",
    "folder_lock", "generate_run_name", "number", "hold_run_dir", "is_unstarted", "iter_runs", "job_result_path", "list_jobs",
    "process_alive", "process_start_time", "queued_record", "read_json", "read_metrics", "read_metrics_chunk", "read_notes", "read_run",
    "read_status", "read_sweep", "resolve_run_dir", "truncate_metrics_after", "update_status", "write_notes",
]

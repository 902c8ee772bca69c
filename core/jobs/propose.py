"""A model-based sweep (``simclr sweep --sample N --sampler tpe``): settings proposed as earlier ones end.

Optuna is the engine: the sweep's study lives in its own folder
(``RUNS/.sweeps/NAME/optuna.journal``, Optuna's journal-file storage, which several
processes and hosts on a shared filesystem may write at once), one trial per setting, asked
with its TPE sampler (ask-and-tell). Before each ask, the trials whose members have all
ended are told: COMPLETE with the mean of their finished seeds' metric, PRUNED (after
reporting the setting's means at its rungs, from the decision log, which TPE ranks pruned
trials by) or FAIL. The first ``startup`` settings are random draws (TPE's
``n_startup_trials``), so ``simclr sweep`` makes them at once; every later one is proposed
when a slot frees: by the queue's worker (``core.jobs.worker``), or under Slurm by the
batch shell of a member that ended (``core.jobs.slurm_job``). The TUI and ``simclr sweep
show`` never need Optuna: the members are ordinary runs and the plan says how many are
still to come.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from core.config import ConfigError, PretrainConfig
from core.jobs import space as spaces
from core.jobs.plan import members, read_plan, sweep_dir, write_plan
from core.jobs.prune import METRICS, read_log, setting_of
from core.jobs.sweep import Member
from core.runs import folder_lock, read_metrics
from core.runs.state import LIVE_STATES

JOURNAL = "optuna.journal"
#: how many invalid proposals (a drawn setting the config refuses) before giving up for now
MAX_INVALID = 10


def startup_settings(n: int) -> int:
    """TPE's random start: a third of the settings, 1 to 10."""
    return max(1, min(10, n // 3))


def open_study(runs_dir: Path, name: str, plan: dict[str, Any], proposals: int = 0):
    """The sweep's Optuna study (made on first use), its TPE sampler seeded from the sweep
    seed and how many settings were proposed before, so a proposal is reproducible."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = JournalStorage(JournalFileBackend(str(sweep_dir(runs_dir, name) / JOURNAL)))
    sampler = optuna.samplers.TPESampler(seed=int(plan.get("sweep_seed") or 0) * 1000 + proposals,
                                         n_startup_trials=int(plan.get("startup") or 1), constant_liar=True)
    higher = METRICS[objective(plan)][1]
    return optuna.create_study(study_name=name, storage=storage, sampler=sampler, load_if_exists=True,
                               direction="maximize" if higher else "minimize")


def objective(plan: dict[str, Any]) -> str:
    """The metric a sampled sweep optimises: its pruning metric, else the kNN monitor's top-1."""
    return (plan.get("prune") or {}).get("metric") or "knn_top1"


def final_value(run_dir: Path, metric: str) -> float | None:
    """A finished member's last value of the sweep's metric (the last epoch's mean loss for loss)."""
    tag = METRICS[metric][0]
    records = [r for r in read_metrics(run_dir / "metrics.jsonl")[0] if r["tag"] == tag and "job" not in r]
    if not records:
        return None
    if metric != "loss":
        return float(records[-1]["value"])
    last = max(r.get("epoch", 0) for r in records)
    tail = [r["value"] for r in records if r.get("epoch", 0) > math.ceil(last) - 1]
    return float(sum(tail) / len(tail))


def sync(study, runs_dir: Path, name: str, plan: dict[str, Any]) -> None:
    """Tell the study every setting whose members have all ended; a running trial with no
    member (its members were never made, or were cancelled) fails."""
    import optuna
    from optuna.trial import TrialState

    by_trial: dict[int, list[tuple[Any, dict[str, Any]]]] = {}
    for run, rec in members(runs_dir, name):
        if rec["trial"] is not None:
            by_trial.setdefault(rec["trial"], []).append((run, rec))
    log = read_log(sweep_dir(runs_dir, name))
    metric = objective(plan)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        runs = by_trial.get(trial.number, [])
        if not runs:
            study.tell(trial.number, state=TrialState.FAIL)
            continue
        if any(r.state == "queued" or r.state in LIVE_STATES for r, _ in runs):
            continue
        setting = setting_of(runs[0][1]["swept"])
        at_rung = {d.epoch: d.setting_value for d in log if d.setting == setting}  # the last: the most seeds
        live = optuna.trial.Trial(study, trial._trial_id)
        for epoch, value in sorted(at_rung.items()):
            if value is not None and math.isfinite(value):
                live.report(value, epoch)
        done = [v for r, _ in runs if r.state == "finished" and (v := final_value(r.path, metric)) is not None]
        if done:
            study.tell(trial.number, sum(done) / len(done))
        elif any(r.state == "pruned" for r, _ in runs):
            study.tell(trial.number, state=TrialState.PRUNED)
        else:
            study.tell(trial.number, state=TrialState.FAIL)


def new_members(name: str, plan: dict[str, Any], values: dict[str, Any], trial: int,
                first_index: int) -> list[tuple[Member, dict[str, Any]]]:
    """The members of the setting trial number ``trial`` proposed (one per seed), validated,
    with their sweep.json records. Names by the trial's number, never reused: ``NAME-004``
    (or ``NAME-004-seed=1`` with seeds)."""
    seeds = plan.get("seeds")
    out = []
    for s in [None] if not seeds else seeds:
        combo = ({} if s is None else {"seed": s}) | values
        cfg: PretrainConfig = spaces._validated(name, plan.get("base") or {}, combo, values)
        member = Member(f"{name}-{trial + 1:03d}" + (f"-seed={s}" if seeds and len(seeds) > 1 else ""),
                        first_index + len(out), {k: getattr(cfg, k) for k in combo}, cfg)
        record = member.sweep_record(name, int(plan["sample"]) * len(seeds or [0]), {}, seeds)
        out.append((member, {**record, "trial": trial, "setting": trial}))
    return out


def grow(runs_dir: str | Path, name: str, settings: int = 1, opts: Any = None, *,
         queue_locked: bool = False, after: int | None = None) -> dict[str, Any]:
    """Up to ``settings`` new settings of TPE sweep ``name``, asked of its study and made as
    members (queued, or submitted to Slurm with ``opts``) in one critical section: the queue's
    lock (unless the caller holds it: ``queue_locked``), then the sweep folder's. None when
    the sweep is no TPE sweep, stopped proposing, or has all its settings. ``after``: the
    setting whose end asks (a Slurm member's batch shell); each setting asks once, however
    many of its seeds end at once. Returns member name -> queue place or Slurm job id."""
    from contextlib import nullcontext

    from optuna.trial import TrialState

    from core.jobs import queue, studies

    root = Path(runs_dir)
    with nullcontext() if queue_locked else queue.queue_lock(root), folder_lock(sweep_dir(root, name) / JOURNAL):
        plan = read_plan(root, name)
        if not plan or plan.get("sampler") != "tpe" or plan.get("stopped"):
            return {}
        proposed = int(plan.get("proposed") or 0)
        want = min(settings, int(plan["sample"]) - proposed)
        asked = list(plan.get("proposed_after") or [])
        if want <= 0 or (after is not None and after in asked):
            return {}
        space = spaces.from_description(plan.get("space") or {})
        study = open_study(root, name, plan, proposals=len(study_trials(root, name, plan)))
        sync(study, root, name, plan)
        existing = len(members(root, name))
        pairs: list[tuple[Member, dict[str, Any]]] = []
        trials, invalid = [], 0
        while len(trials) < want and invalid < MAX_INVALID:
            trial = study.ask(space)
            try:
                pairs += new_members(name, plan, {k: trial.params[k] for k in space}, trial.number, existing + len(pairs))
                trials.append(trial.number)
            except ConfigError:
                study.tell(trial, state=TrialState.FAIL)
                invalid += 1
        if not trials:  # the space gives nothing valid any more: the sweep stops proposing, and says why
            write_plan(root, name, {**plan, "stopped": f"the sampler drew {MAX_INVALID} invalid settings in a row"})
            return {}
        made: list[Path] = []
        jobs: list[str] = []
        try:
            placed = studies._make(root, pairs, plan.get("then") or [], opts, made, jobs)
        except BaseException:
            studies._undo(made, jobs)
            for number in trials:
                study.tell(number, state=TrialState.FAIL)
            raise
        write_plan(root, name, {**plan, "proposed": proposed + len(trials),
                                **({"proposed_after": asked + [after]} if after is not None else {})})
        return placed


def study_trials(runs_dir: Path, name: str, plan: dict[str, Any]) -> list:
    """The study's trials so far (none before the first proposal)."""
    if not (sweep_dir(runs_dir, name) / JOURNAL).exists():
        return []
    return open_study(runs_dir, name, plan).get_trials(deepcopy=False)

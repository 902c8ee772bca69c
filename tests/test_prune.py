"""Pruning a sweep's hopeless members (core.jobs.prune), the pruned state, and sampled sweeps.

The rules are checked against Optuna's own pruners (one seed: they must agree) and against
the seeds' mean; the end-to-end test is the one issue 22 asks for: an ``--prune asha
--min-epochs 1 --reduction-factor 2`` sweep of tiny synthetic runs whose worker is SIGKILLed
mid-way, after which every decision in the log agrees with the recorded metrics and with a
replay of the rule over the log.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import wait_for

from core.jobs.plan import read_plan, sweep_dir, write_plan
from core.jobs.prune import Pruner, PruneSpec, asha, median, read_log
from core.jobs.worker import worker_info
from core.runs import atomic_write_json, read_json, read_metrics, read_run

ROOT = Path(__file__).resolve().parents[1]


def simclr(*args: str, timeout: float = 120, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "core", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd, env=dict(os.environ, PYTHONPATH=str(ROOT)))


# ---------------------------------------------------------------------- the rules
def test_rungs_are_r_times_eta_to_the_k_before_the_last_epoch():
    assert PruneSpec("asha", min_epochs=1, reduction_factor=2).rungs(10) == [1, 2, 4, 8]
    assert PruneSpec("asha", min_epochs=2, reduction_factor=3).rungs(18) == [2, 6]
    assert PruneSpec("median", min_epochs=5, reduction_factor=3).rungs(5) == []


@pytest.mark.parametrize("eta", [2, 3, 4])
def test_asha_agrees_with_optunas_successive_halving_for_one_seed(eta):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rng = random.Random(eta)
    values = [rng.random() for _ in range(25)]
    study = optuna.create_study(direction="maximize")
    pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=eta)
    for i, v in enumerate(values):
        trial = study.ask()
        trial.report(v, 1)
        theirs = pruner.prune(study, study._storage.get_trial(trial._trial_id))
        ours, cutoff = asha(v, {str(j): w for j, w in enumerate(values[:i])}, eta, higher=True)
        assert ours == theirs, (i, v)
        kept = sorted(values[: i + 1], reverse=True)[: max(1, (i + 1) // eta)]
        assert cutoff == kept[-1]  # the worst value that still goes on
        study.tell(trial, v)


def test_median_agrees_with_optunas_median_pruner_for_one_seed():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rng = random.Random(7)
    study = optuna.create_study(direction="maximize")
    pruner = optuna.pruners.MedianPruner(n_startup_trials=0, n_warmup_steps=0, n_min_trials=1)
    completed: dict[str, float] = {}
    for i in range(25):
        v = rng.random()
        trial = study.ask()
        trial.report(v, 1)
        theirs = pruner.prune(study, study._storage.get_trial(trial._trial_id))
        ours, cutoff = median(v, completed, higher=True)
        assert ours == theirs, (i, v, completed)
        if rng.random() < 0.5:  # some finish, the others are left running (not compared)
            study.tell(trial, v)
            completed[str(i)] = v
    assert median(0.2, {"a": 0.1, "b": 0.3, "c": 0.9}, higher=True) == (True, 0.3)
    assert median(0.2, {"a": 0.1, "b": 0.3, "c": 0.9}, higher=False) == (False, 0.3)  # a loss: lower is better
    assert median(float("nan"), {}, higher=True)[0] is True


def _member(root: Path, sweep: str, name: str, swept: dict) -> Path:
    path = root / name
    path.mkdir(parents=True)
    atomic_write_json(path / "sweep.json", {"sweep": sweep, "index": 0, "swept": swept})
    return path


def test_a_settings_seeds_are_judged_together_by_their_mean(tmp_path):
    write_plan(tmp_path, "s", {"mode": "grid", "prune": PruneSpec("asha", "knn_top1", 1, 2).to_dict()})
    pruners = {f"{t}{seed}": Pruner.of(_member(tmp_path, "s", f"s-{t}-{seed}", {"t": t, "seed": seed}), 4)
               for seed in (0, 1) for t in ("a", "b")}
    assert pruners["a0"].rungs == [1, 2]
    assert not pruners["a0"].decide(1, 0.90).prune  # the first setting to arrive: the best so far
    b0 = pruners["b0"].decide(1, 0.50)
    assert b0.prune and b0.cutoff == 0.90 and b0.compared == {"t=a": 0.90}
    # an unlucky second seed of a does not sink it: a's mean 0.55 is still the better of two
    a1 = pruners["a1"].decide(1, 0.20)
    assert not a1.prune and a1.setting_value == pytest.approx(0.55) and a1.seeds_in_mean == 2
    assert a1.compared == {"t=b": 0.50}
    # a lucky second seed of b is judged with b's first: mean 0.725 beats a's 0.55 now
    b1 = pruners["b1"].decide(1, 0.95)
    assert not b1.prune and b1.setting_value == pytest.approx(0.725) and b1.compared == {"t=a": pytest.approx(0.55)}
    # asked again (a resume, a requeued job): the decision in the log, never a new one
    assert pruners["b0"].decide(1, 0.99) == b0
    assert len(read_log(sweep_dir(tmp_path, "s"))) == 4
    assert pruners["b0"].earlier(3) == b0 and pruners["a0"].earlier(3) is None


def test_the_median_rule_compares_with_completed_settings_only(tmp_path):
    write_plan(tmp_path, "m", {"mode": "grid", "prune": PruneSpec("median", "knn_top1", 1, 2).to_dict()})
    done = _member(tmp_path, "m", "m-a", {"t": "a"})
    atomic_write_json(done / "status.json", {"state": "finished", "kind": "pretrain"})
    live = _member(tmp_path, "m", "m-b", {"t": "b"})
    assert not Pruner.of(done, 4).decide(1, 0.6).prune
    first = Pruner.of(live, 4).decide(1, 0.1)  # a (0.6) has finished: b is compared with it
    assert first.prune and first.cutoff == 0.6 and first.compared == {"t=a": 0.6}
    other = _member(tmp_path, "m", "m-c", {"t": "c"})
    d = Pruner.of(other, 4).decide(1, 0.05)  # b is pruned, not completed: only a counts
    assert d.compared == {"t=a": 0.6} and d.prune


# ---------------------------------------------------------------------- end to end
def _replay(log, eta: int) -> None:
    """Every decision again, from the decisions before it at its rung: the same answer."""
    for i, d in enumerate(log):
        seen: dict[str, dict[str, float]] = {}
        for e in log[:i]:
            if e.epoch == d.epoch:
                seen.setdefault(e.setting, {})[e.member] = e.value
        seen.setdefault(d.setting, {})[d.member] = d.value
        means = {s: sum(v.values()) / len(v) for s, v in seen.items()}
        own = means.pop(d.setting)
        assert (own, means) == (pytest.approx(d.setting_value), pytest.approx(d.compared))
        assert asha(own, means, eta, higher=True) == (d.prune, pytest.approx(d.cutoff)), d


def test_an_asha_sweep_prunes_and_a_sigkilled_worker_changes_no_decision(tmp_path):
    runs = tmp_path / "runs"
    lrs = ["3e-3", "1e-6", "1e-3", "1e-5"]
    names = [f"p-lr={lr}" for lr in ("0.003", "1e-06", "0.001", "1e-05")]
    res = simclr("sweep", "p", "--runs-dir", str(runs), "--grid", f"lr={','.join(lrs)}", "--prune", "asha",
                 "--min-epochs", "1", "--reduction-factor", "2", "--slots", "1", "--then", "knn", "--",
                 "--preset", "tiny", "--epochs", "4", "--checkpoint-every", "0")
    assert res.returncode == 0, res.stderr
    assert read_plan(runs, "p")["prune"] == {"rule": "asha", "metric": "knn_top1", "min_epochs": 1,
                                             "reduction_factor": 2}
    wait_for(lambda: (worker_info(runs) or {}).get("pid"), timeout=30, what="the queue worker")  # its worker.json written
    worker = worker_info(runs)
    wait_for(lambda: read_run(runs / names[1]).state in ("running", "pruned", "finished"), timeout=240,
             what=f"{names[1]} started")
    os.kill(worker["pid"], signal.SIGKILL)
    wait_for(lambda: worker_info(runs) is None, timeout=10, what="the worker gone")
    res = simclr("queue", "work", "--runs-dir", str(runs), timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr

    log = read_log(sweep_dir(runs, "p"))
    states = {n: read_json(runs / n / "status.json") for n in names}
    pruned = [n for n in names if states[n]["state"] == "pruned"]
    survivors = [n for n in names if states[n]["state"] == "finished"]
    assert pruned and survivors and len(pruned) + len(survivors) == 4, states
    assert max(states[n]["step"] for n in pruned) < min(states[n]["step"] for n in survivors)
    # one decision per member and rung; each agrees with the member's recorded kNN top-1
    assert len({(d.member, d.epoch) for d in log}) == len(log)
    for d in log:
        records = read_metrics(runs / d.member / "metrics.jsonl")[0]
        knn = [r["value"] for r in records if r["tag"] == "knn/top1" and r["epoch"] == d.epoch]
        assert knn == [d.value], (d, knn)
    _replay(log, eta=2)
    for n in pruned:  # stopped at its rung with a checkpoint, said why; its --then job never ran
        last = [d for d in log if d.member == n][-1]
        assert last.prune and states[n]["epoch"] == last.epoch and (runs / n / "checkpoints" / "last.pt").exists()
        assert states[n]["note"].startswith(f"pruned at epoch {last.epoch} by its sweep (asha)")
        assert not (runs / n / "eval" / "knn-last.json").exists()
    for n in survivors:
        assert [d.prune for d in log if d.member == n] == [False, False] and states[n]["epoch"] == 4
        assert (runs / n / "eval" / "knn-last.json").exists()
    shown = json.loads(simclr("sweep", "show", "p", "--runs-dir", str(runs), "--format", "json").stdout)
    assert shown["pruned"] == len(pruned) and len(shown["decisions"]) == len(log)
    assert {m["run"]: m["state"] for m in shown["members"]} == {n: states[n]["state"] for n in names}
    table = simclr("sweep", "show", "p", "--runs-dir", str(runs)).stdout
    assert "pruning decisions" in table and "prune" in table
    assert "never: its run was pruned" in simclr("queue", "--runs-dir", str(runs)).stdout
    listed = json.loads(simclr("runs", "--runs-dir", str(runs), "--format", "json").stdout)
    assert {Path(r["path"]).name: r["state"] for r in listed if r["parent"] is None} == \
        {n: states[n]["state"] for n in names}

    # TensorBoard's own reader: one HParams row per member, the sweep and its pruning as columns
    from tests.test_tensorboard_hparams import load, rows, scalars

    tb = load(runs)
    hparams = rows(tb)
    assert {r: h for r, h in hparams.items() if "/" not in r} == hparams  # no sub-runs: one row per run
    assert set(hparams) == set(names)
    assert all(hparams[n]["sweep"] == "p" and hparams[n]["pruned"] == (n in pruned) for n in names)
    assert len({frozenset(h) for h in hparams.values()}) == 1  # the same columns for every member
    assert all(scalars(tb, n, "knn/top1") and scalars(tb, n, "health/std") for n in names)

    # killed after its decision, before it said so (it reads stopped, not pruned): a resume ends it pruned at once
    from core.runs import update_status

    update_status(runs / pruned[0] / "status.json", state="stopped")
    res = simclr("pretrain", "--resume", str(runs / pruned[0]), timeout=300)
    assert res.returncode == 0, res.stderr
    again = read_json(runs / pruned[0] / "status.json")
    assert again["state"] == "pruned" and again["step"] == states[pruned[0]]["step"]

    # a person resumes a pruned member: it trains to the end, and the sweep decides nothing more
    res = simclr("pretrain", "--resume", str(runs / pruned[0]), timeout=300)
    assert res.returncode == 0, res.stderr
    assert read_json(runs / pruned[0] / "status.json")["state"] == "finished"
    assert read_json(runs / pruned[0] / "status.json")["epoch"] == 4
    assert len(read_log(sweep_dir(runs, "p"))) == len(log)


# ---------------------------------------------------------------------- sampled sweeps
def test_random_draws_make_six_valid_distinct_members_the_same_from_the_same_seed(tmp_path):
    args = ["--sample", "6", "--sampler", "random", "--sweep-seed", "5", "--space", "lr=loguniform:1e-4:1e-2",
            "--space", "batch_size=choice:16,32", "--no-start", "--", "--preset", "tiny"]
    made = []
    for runs in (tmp_path / "a", tmp_path / "b"):
        res = simclr("sweep", "r", "--runs-dir", str(runs), *args)
        assert res.returncode == 0, res.stderr
        members = sorted((p.name, json.dumps(read_json(p / "sweep.json")["swept"], sort_keys=True))
                         for p in runs.iterdir() if (p / "sweep.json").exists())
        configs = [read_json(runs / n / "config.json") for n, _ in members]
        assert len(members) == 6 and len({s for _, s in members}) == 6
        assert all(1e-4 <= c["lr"] <= 1e-2 and c["batch_size"] in (16, 32) for c in configs)
        made.append(members)
    assert made[0] == made[1]
    other = simclr("sweep", "r", "--runs-dir", str(tmp_path / "c"), *[a if a != "5" else "6" for a in args])
    assert other.returncode == 0
    lrs = {(read_json(p / "sweep.json") or {}).get("swept", {}).get("lr") for p in (tmp_path / "c").iterdir()}
    assert lrs - {None} != {json.loads(s)["lr"] for _, s in made[0]}  # another seed, other draws


@pytest.mark.parametrize("argv, message", [
    (["--sample", "3", "--space", "lr=loguniform:0:1"], "loguniform needs LOW > 0"),
    (["--sample", "3", "--space", "lr=uniform:-1:-0.5"], "--lr must be positive"),
    (["--sample", "3"], "give --space KEY=DIST"),
    (["--space", "lr=uniform:0.1:1"], "--space is for a sweep that draws its settings: add --sample N"),
    (["--sample", "3", "--space", "lr=uniform:0.1:1", "--grid", "temperature=0.1,0.2"], "not both"),
    (["--sample", "3", "--space", "batch_size=choice:16,32"], "holds only 2 distinct settings"),
    (["--seeds", "0,1", "--min-epochs", "2"], "add --prune asha or --prune median"),
    (["--seeds", "0,1", "--prune", "asha", "--min-epochs", "2"], "leaves no rung before the last epoch"),
    (["--seeds", "0,1", "--prune", "asha", "--reduction-factor", "1"], "--reduction-factor must be at least 2"),
])
def test_a_bad_sampled_or_pruned_sweep_is_one_line_and_makes_nothing(tmp_path, argv, message):
    runs = tmp_path / "runs"
    res = simclr("sweep", "s", "--runs-dir", str(runs), *argv, "--no-start", "--", "--preset", "tiny")
    assert res.returncode == 2 and message in res.stderr and res.stderr.count("\n") == 1, res.stderr
    assert not runs.exists() or [p.name for p in runs.iterdir() if p.name != ".queue"] == []


def test_a_tpe_sweep_proposes_its_settings_as_the_queue_frees_slots(tmp_path):
    runs = tmp_path / "runs"
    res = simclr("sweep", "t", "--runs-dir", str(runs), "--sample", "3", "--sampler", "tpe", "--space",
                 "lr=loguniform:1e-4:1e-2", "--seeds", "0,1", "--no-start", "--", "--preset", "tiny", "--epochs", "1",
                 "--checkpoint-every", "0")
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in runs.iterdir() if not p.name.startswith(".")) == ["t-001-seed=0", "t-001-seed=1"]
    shown = json.loads(simclr("sweep", "show", "t", "--runs-dir", str(runs), "--format", "json").stdout)
    assert shown["to_come"] == 2 and shown["counts"] == {"queued": 2}
    res = simclr("queue", "work", "--runs-dir", str(runs), timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    names = sorted(p.name for p in runs.iterdir() if not p.name.startswith("."))
    assert names == [f"t-00{i}-seed={s}" for i in (1, 2, 3) for s in (0, 1)]
    assert all(read_json(runs / n / "status.json")["state"] == "finished" for n in names)
    settings = {read_json(runs / n / "sweep.json")["swept"]["lr"] for n in names}
    assert len(settings) == 3 and all(1e-4 <= lr <= 1e-2 for lr in settings)
    shown = json.loads(simclr("sweep", "show", "t", "--runs-dir", str(runs), "--format", "json").stdout)
    assert shown["to_come"] == 0 and shown["settings"] == 3
    import optuna

    study = optuna.load_study(study_name="t", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(sweep_dir(runs, "t") / "optuna.journal"))))
    told = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(study.trials) == 3 and len(told) >= 2  # the last setting is told at the next proposal
    for t in told:  # told the mean of its seeds' final kNN top-1
        members = [n for n in names if read_json(runs / n / "sweep.json").get("trial") == t.number]
        finals = [[r["value"] for r in read_metrics(runs / n / "metrics.jsonl")[0] if r["tag"] == "knn/top1"][-1]
                  for n in members]
        assert len(members) == 2 and t.value == pytest.approx(sum(finals) / 2)


def test_a_resumed_pruned_member_is_released_for_good_and_a_nan_is_the_worst(tmp_path, monkeypatch):
    from core.jobs import launch
    from core.jobs.prune import release, released

    write_plan(tmp_path, "s", {"mode": "grid", "prune": PruneSpec("asha", "knn_top1", 1, 2).to_dict()})
    a = _member(tmp_path, "s", "s-a", {"t": "a"})
    atomic_write_json(a / "status.json", {"state": "pruned", "kind": "pretrain"})
    assert Pruner.of(a, 4) is not None
    # a resume submitted to Slurm: the run reads queued afterwards, so the submitter releases it
    monkeypatch.setattr(launch, "_submit", lambda *args, **kw: "123")
    assert launch.submit_pretrain(a, None, None, resume=True) == "123"
    assert released(sweep_dir(tmp_path, "s"), "s-a") and Pruner.of(a, 4) is None
    release(a, "again")  # once is enough
    assert sum('"released"' in line for line in (sweep_dir(tmp_path, "s") / "decisions.jsonl").read_text()
               .splitlines()) == 1
    # a value that is not a number is pruned and never sets the cutoff; the log stays valid JSON
    b = Pruner.of(_member(tmp_path, "s", "s-b", {"t": "b"}), 4)
    c = Pruner.of(_member(tmp_path, "s", "s-c", {"t": "c"}), 4)
    nan = b.decide(1, float("nan"))
    assert nan.prune and nan.cutoff is None
    d = c.decide(1, 0.3)
    assert not d.prune and d.cutoff == 0.3  # the best of two (the nan counts as the worst)
    for line in (sweep_dir(tmp_path, "s") / "decisions.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=lambda c: pytest.fail(f"not JSON: {c}"))
    assert asha(0.5, {"x": float("nan"), "y": 0.4}, 3, higher=True) == (False, 0.5)


def test_a_tpe_sweep_never_reuses_a_name_and_cancel_stops_its_proposals(tmp_path):
    from core.jobs.propose import grow
    from core.jobs.plan import to_come

    runs = tmp_path / "runs"
    res = simclr("sweep", "t", "--runs-dir", str(runs), "--sample", "4", "--sampler", "tpe", "--space",
                 "lr=loguniform:1e-4:1e-2", "--no-start", "--", "--preset", "tiny")
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in runs.iterdir() if not p.name.startswith(".")) == ["t-001"]
    assert simclr("queue", "cancel", "t-001", "--runs-dir", str(runs)).returncode == 0
    assert list(grow(runs, "t", 1)) == ["t-002"]  # the cancelled member's name is not taken again
    assert list(grow(runs, "t", 1, after=1)) == ["t-003"] and grow(runs, "t", 1, after=1) == {}  # once per setting
    assert to_come(read_plan(runs, "t")) == 1
    res = simclr("queue", "cancel", "t", "--runs-dir", str(runs))
    assert res.returncode == 0 and "sweep t proposes no more settings" in res.stdout, res.stdout + res.stderr
    assert read_plan(runs, "t")["stopped"] and to_come(read_plan(runs, "t")) == 0 and grow(runs, "t", 1) == {}
    assert sorted(p.name for p in runs.iterdir() if not p.name.startswith(".")) == []
    res = simclr("queue", "cancel", "nosuch", "--runs-dir", str(runs))
    assert res.returncode == 2 and "nosuch" in res.stderr


def test_the_loss_metric_is_the_epochs_mean_training_loss_lower_is_better(tmp_path):
    write_plan(tmp_path, "l", {"mode": "grid", "prune": PruneSpec("asha", "loss", 1, 2).to_dict()})
    run = _member(tmp_path, "l", "l-a", {"t": "a"})
    # steps 1-4 are epoch 1 (4 steps an epoch), 5-8 epoch 2; a NaN step (skipped) does not count
    losses = [9.0, 8.0, 7.0, 6.0, 5.0, float("nan"), 3.0, 1.0]
    (run / "metrics.jsonl").write_text("".join(
        json.dumps({"tag": "train/loss", "value": v, "step": i + 1, "epoch": (i + 1) / 4}) + "\n"
        for i, v in enumerate(losses)))
    p = Pruner.of(run, 4)
    assert p.value(4, 4, None) == pytest.approx(7.5) and p.value(8, 4, None) == pytest.approx(3.0)
    assert p.higher is False
    other = Pruner.of(_member(tmp_path, "l", "l-b", {"t": "b"}), 4)
    assert not p.decide(1, 7.5).prune and other.decide(1, 8.0).prune  # a higher loss is worse

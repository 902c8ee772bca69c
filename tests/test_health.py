"""Run health (core.training.health): the statistics against direct formulas, the verdict's
rules and boundaries, and real tiny runs: healthy, not learning (warn and stop + resume),
collapsed (a constant projection head) and diverged (a NaN loss)."""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from core.config import PretrainConfig
from core.errors import ConfigError
from core.report.console import runs_table
from core.report.listing import run_records
from core.runs import read_json, read_metrics, read_status
from core.runs.status import Status
from core.simclr.loss import NTXentLoss
from core.training import health
from core.training.health import (CHANCE_RATIO, LOSS_FLAT, SAMPLE_STEPS, STD_COLLAPSED, Health, alignment,
                                  chance_loss, judge, normalised_std, uniformity)
from tests.helpers import make_run

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--preset", "tiny", "--knn-k", "10"]


# ---------------------------------------------------------------------- the statistics, by direct formulas
def unit(row: list[float]) -> list[float]:
    n = math.sqrt(sum(v * v for v in row))
    return [v / n for v in row]


def sq_dist(a: list[float], b: list[float]) -> float:
    return sum((x - y) ** 2 for x, y in zip(a, b))


def test_alignment_is_the_mean_squared_distance_of_normalised_pairs():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    direct = statistics.fmean(sq_dist(unit(a), unit(b)) for a, b in zip(z1.tolist(), z2.tolist()))
    assert alignment(z1, z2) == pytest.approx(direct, rel=1e-5)
    assert alignment(z1, 3 * z1) == pytest.approx(0, abs=1e-6)  # identical views (up to scale)
    assert alignment(z1, -z1) == pytest.approx(4, rel=1e-6)       # opposite views: the most


def test_uniformity_is_log_mean_gaussian_potential_over_distinct_pairs():
    z = torch.randn(7, 4, generator=torch.Generator().manual_seed(1))
    rows = [unit(r) for r in z.tolist()]
    pairs = [(i, j) for i in range(7) for j in range(i + 1, 7)]
    direct = math.log(statistics.fmean(math.exp(-2 * sq_dist(rows[i], rows[j])) for i, j in pairs))
    assert uniformity(z) == pytest.approx(direct, rel=1e-5)
    assert uniformity(torch.ones(5, 4)) == pytest.approx(0, abs=1e-6)  # collapsed: every distance 0


def test_std_is_per_dimension_std_of_normalised_rows_times_sqrt_d():
    z = torch.randn(9, 3, generator=torch.Generator().manual_seed(2))
    rows = [unit(r) for r in z.tolist()]
    direct = statistics.fmean(statistics.pstdev(col) for col in zip(*rows)) * math.sqrt(3)
    assert normalised_std(z) == pytest.approx(direct, rel=1e-9)
    assert normalised_std(torch.tensor([[1.0, 2.0, 3.0]]).repeat(10, 1)) == pytest.approx(0, abs=1e-7)


def sphere_uniformity(d: int, t: float = 2.0) -> float:
    """log E exp(-t ||x - y||^2) for x, y uniform on S^(d-1): ||x - y||^2 = 2 - 2c, with the
    cosine c distributed as (1 - c^2)^((d - 3) / 2) on [-1, 1] (Simpson's rule)."""
    n = 20000
    cs = [-1 + 2 * k / n for k in range(n + 1)]
    w = [1 if k in (0, n) else 4 if k % 2 else 2 for k in range(n + 1)]
    dens = [(1 - c * c) ** ((d - 3) / 2) for c in cs]
    num = sum(wk * p * math.exp(-t * (2 - 2 * c)) for wk, p, c in zip(w, dens, cs))
    return math.log(num / sum(wk * p for wk, p in zip(w, dens)))


def test_random_directions_are_healthy():
    d = 16
    z = torch.randn(4000, d, generator=torch.Generator().manual_seed(3))
    assert normalised_std(z) == pytest.approx(1, abs=0.02)
    # uniformity's pdist uses its first UNIFORMITY_ROWS rows: 512 * 511 / 2 pairs
    assert uniformity(z) == pytest.approx(sphere_uniformity(d), abs=0.03)
    assert sphere_uniformity(d) == pytest.approx(-4 + 8 / d, abs=0.05)  # the docstring's approximation


@pytest.mark.parametrize("pairs", [2, 8, 32])
def test_chance_is_the_loss_of_uniform_similarities(pairs):
    z = torch.ones(pairs, 8)  # every similarity equal
    assert NTXentLoss(0.5)(z, z).item() == pytest.approx(chance_loss(pairs), rel=1e-6)
    assert chance_loss(pairs) == pytest.approx(-math.log(1 / (2 * pairs - 1)))


# ---------------------------------------------------------------------- the verdict
def test_collapsed_below_the_std_threshold_from_the_first_epoch():
    v = judge(1, STD_COLLAPSED * 0.99, 4.0, 0.9)
    assert v.word == "collapsed" and v.bad
    assert v.reason == "collapsed: projection std 0.099 of healthy 1 (below 0.1) at epoch 1"
    assert judge(1, STD_COLLAPSED, 4.0, 0.9).word == "ok"  # the boundary itself is healthy


def test_the_first_epoch_cannot_be_not_learning():
    assert judge(1, 0.8, 4.2, 1.01, first_loss=4.2).word == "ok"
    v = judge(2, 0.8, 4.2, 1.01, first_loss=4.2)
    assert v.word == "not learning" and v.reason.startswith("not learning: loss 4.2 is 1.010 of chance")


def test_not_learning_at_chance_boundary():
    assert judge(2, 0.8, 3.0, CHANCE_RATIO, first_loss=4.0).word == "not learning"
    assert judge(2, 0.8, 3.0, CHANCE_RATIO - 1e-6, first_loss=4.0).word == "ok"


def test_not_learning_when_the_loss_has_not_fallen_one_percent():
    first = 4.0
    fallen = (1 - LOSS_FLAT) * first
    assert judge(2, 0.8, fallen, 0.9, first_loss=first).word == "ok"  # exactly 1% below
    v = judge(2, 0.8, fallen + 1e-6, 0.9, first_loss=first)
    assert v.word == "not learning"
    assert v.reason == "not learning: epoch mean loss 3.96 is not 1% below epoch 1's 4 (-1.0%) at epoch 2"
    assert judge(5, 0.8, 4.1, 0.9, first_loss=first).word == "not learning"  # a rising loss too
    assert judge(2, 0.8, 4.0, 0.9, first_loss=None).word == "ok"  # no reference: only the chance rule
    # a fall of 1% (0.04) must be at least two standard errors of the difference to be seen
    assert judge(2, 0.8, 4.0, 0.9, first_loss=first, noise=0.02).word == "not learning"
    assert judge(2, 0.8, 4.0, 0.9, first_loss=first, noise=0.0201).word == "ok"


def test_not_learning_waits_for_warmup_and_an_epoch_after_the_reference():
    flat = dict(std=0.8, loss=4.0, vs_chance=0.995, first_loss=4.0)
    assert judge(2, **flat, warmup_epochs=2.5).word == "ok"
    assert judge(3, **flat, warmup_epochs=2.5).word == "not learning"
    assert judge(3, **flat, first_epoch=3).word == "ok"  # a reference taken after a resume
    assert judge(4, **flat, first_epoch=3).word == "not learning"


def test_collapse_wins_over_not_learning():
    assert judge(4, 0.01, 4.0, 1.0, first_loss=4.0).word == "collapsed"


# ---------------------------------------------------------------------- the meter, in process
class FakeLog:
    enabled = True

    def __init__(self):
        self.metrics, self.status, self.said = [], {}, []

    def metric(self, tag, value, step, epoch):
        self.metrics.append((tag, value, step, epoch))

    def update(self, force=True, **fields):
        self.status.update(fields)

    def say(self, text):
        self.said.append(text)


def test_meter_measures_the_last_steps_of_the_epoch_and_every_loss():
    spe, n, d = SAMPLE_STEPS + 3, 6, 5
    log = FakeLog()
    prog = SimpleNamespace(epoch=0, step=0, extra={})
    meter = Health(SimpleNamespace(cfg=PretrainConfig(on_unhealthy="warn", warmup_epochs=0), log=log,
                                   steps_per_epoch=spe, progress=prog))
    assert log.status == {"health": "ok", "health_reason": "ok: no epoch finished yet"}
    g = torch.Generator().manual_seed(4)
    zs = [torch.ones(n, 2, d) if k < spe - SAMPLE_STEPS else torch.randn(n, 2, d, generator=g) for k in range(spe)]
    losses = [3.0 + k / 10 for k in range(spe)]
    for k in range(spe):
        meter.step(zs[k], losses[k], k)
    meter.step(torch.full((n, 2, d), float("nan")), float("nan"), spe - 1)  # a skipped NaN step: left out
    prog.epoch, prog.step = 1, spe
    assert meter.epoch_end(prog) is False
    got = {tag: (value, step, epoch) for tag, value, step, epoch in log.metrics}
    sampled = torch.cat(zs[spe - SAMPLE_STEPS:])
    assert got["health/std"] == (pytest.approx(normalised_std(sampled.flatten(0, 1)), rel=1e-6), spe, 1.0)
    assert got["health/alignment"][0] == pytest.approx(alignment(sampled[:, 0], sampled[:, 1]), rel=1e-5)
    per_step = [(uniformity(z[:, 0]) + uniformity(z[:, 1])) / 2 for z in zs[spe - SAMPLE_STEPS:]]
    assert got["health/uniformity"][0] == pytest.approx(statistics.fmean(per_step), rel=1e-5)
    assert got["health/loss_vs_chance"][0] == pytest.approx(statistics.fmean(losses) / math.log(2 * n - 1))
    assert log.status["health"] == "ok"
    assert prog.extra["health"]["first_loss"] == pytest.approx(statistics.fmean(losses))  # kept in the checkpoint
    assert log.said == []


# ---------------------------------------------------------------------- config, status, listing
def test_on_unhealthy_is_validated():
    assert PretrainConfig().on_unhealthy == "warn"
    with pytest.raises(ConfigError, match="--on-unhealthy must be one of warn, stop"):
        PretrainConfig(on_unhealthy="panic").validate()


def test_status_reads_health_as_strings():
    st = Status.from_dict({"state": "running", "health": "collapsed", "health_reason": "collapsed: ..."})
    assert (st.health, st.health_reason, st.bad) == ("collapsed", "collapsed: ...", ())
    assert Status.from_dict({"health": 3}).bad == ("health",)


def test_runs_listing_shows_health(tmp_path):
    runs = tmp_path / "runs"
    make_run(runs, "a", config={}, state="finished", health="not learning", health_reason="not learning: x")
    make_run(runs, "b", config={}, state="finished")  # from before health: unknown
    recs = {r["name"]: r for r in run_records(runs)}
    assert (recs["a"]["health"], recs["a"]["health_reason"]) == ("not learning", "not learning: x")
    assert (recs["b"]["health"], recs["b"]["health_reason"]) == (None, None)
    from rich.console import Console
    console = Console(width=200, record=True)
    console.print(runs_table(list(recs.values()), runs))
    lines = map(str.split, console.export_text().splitlines())
    rows = {cells[0]: cells for cells in lines if cells[:1] in (["a"], ["b"])}
    assert rows["a"][3] == "not-learning" and rows["b"][3] == "-"


# ---------------------------------------------------------------------- real tiny runs
def simclr(tmp_path: Path, *args: str, patch: str = "") -> subprocess.CompletedProcess:
    """`simclr ARGS` in a subprocess; ``patch``: Python run first (a fault injected in that process only)."""
    code = f"import sys\nfrom core import cli\n{patch}\nsys.exit(cli.main(sys.argv[1:]))"
    env = {**os.environ, "SIMCLR_CACHE": str(tmp_path / ".cache"), "COLUMNS": "250",
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path, env=env)


def health_records(run: Path) -> dict[int, dict[str, float]]:
    by_epoch: dict[int, dict[str, float]] = {}
    for r in read_metrics(run / "metrics.jsonl")[0]:
        if r["tag"].startswith("health/"):
            by_epoch.setdefault(int(r["epoch"]), {})[r["tag"]] = r["value"]
    return by_epoch


def test_healthy_tiny_run_is_ok_with_health_every_epoch(tmp_path):
    run = tmp_path / "runs" / "ok"
    res = simclr(tmp_path, "pretrain", *TINY, "--epochs", "2", "--run-dir", str(run))
    assert res.returncode == 0, res.stderr
    st = read_status(run)
    assert st.state == "finished" and st.health == "ok" and st.health_reason.startswith("ok: projection std")
    recs = health_records(run)
    assert sorted(recs) == [1, 2]
    for values in recs.values():
        assert set(values) == {"health/std", "health/alignment", "health/uniformity", "health/loss_vs_chance"}
        assert 0.3 < values["health/std"] <= 1.0 and 0 < values["health/alignment"] < 4
        assert -4 < values["health/uniformity"] < 0 and 0.5 < values["health/loss_vs_chance"] < CHANCE_RATIO
    res = simclr(tmp_path, "runs", "--runs-dir", str(tmp_path / "runs"), "--format", "json")
    (rec,) = json.loads(res.stdout)
    assert rec["health"] == "ok" and rec["health_reason"] == st.health_reason


def test_not_learning_run_warns_once(tmp_path):
    run = tmp_path / "flat"
    res = simclr(tmp_path, "pretrain", *TINY, "--epochs", "3", "--lr", "1e-12", "--run-dir", str(run))
    assert res.returncode == 0, res.stderr
    st = read_status(run)
    assert st.state == "finished" and st.health == "not learning" and st.note is None
    said = [line for line in res.stdout.splitlines() if "not learning:" in line]
    assert len(said) == 1 and "at epoch 2 (--on-unhealthy warn" in said[0], res.stdout


def test_not_learning_run_stops_and_resumes(tmp_path):
    run = tmp_path / "flat"
    res = simclr(tmp_path, "pretrain", *TINY, "--epochs", "3", "--lr", "1e-12", "--on-unhealthy", "stop",
                 "--run-dir", str(run))
    assert res.returncode == 0, res.stderr
    st = read_status(run)
    assert (st.state, st.step, st.epoch, st.health) == ("stopped", 16, 2, "not learning")
    assert st.note == st.health_reason and st.note.startswith("not learning:") and "at epoch 2" in st.note
    assert (run / "checkpoints" / "last.pt").exists()
    res = simclr(tmp_path, "pretrain", "--resume", str(run))
    assert res.returncode == 0, res.stderr
    st = read_status(run)
    assert st.state == "finished" and st.step == 24 and st.note is None
    assert st.health == "not learning" and "at epoch 3" in st.health_reason  # still measured after the resume
    assert sorted(health_records(run)) == [1, 2, 3]


def test_constant_projection_is_collapsed(tmp_path):
    constant = ("from core.simclr import models\nreal = models.ProjectionHead.forward\n"
                "models.ProjectionHead.forward = lambda self, h: real(self, h) * 0 + 1")
    run = tmp_path / "col"
    res = simclr(tmp_path, "pretrain", *TINY, "--epochs", "2", "--run-dir", str(run), patch=constant)
    assert res.returncode == 0, res.stderr
    st = read_status(run)
    assert st.health == "collapsed"
    assert st.health_reason == "collapsed: projection std 0 of healthy 1 (below 0.1) at epoch 2"
    recs = health_records(run)
    assert recs[1]["health/std"] == pytest.approx(0, abs=1e-6)
    assert recs[1]["health/alignment"] == pytest.approx(0, abs=1e-6)
    assert recs[1]["health/loss_vs_chance"] == pytest.approx(1, rel=1e-5)
    assert sum("collapsed:" in line for line in res.stdout.splitlines()) == 1  # said once, when it turned bad


def test_nan_loss_is_diverged(tmp_path):
    # the trainer's loss only: the memory estimate at start runs NT-Xent on a few tiny batches too
    nan_at_3 = ("from core.simclr.loss import NTXentLoss\nfrom core.training import trainer\ncalls = [0]\n"
                "class NanAt3(NTXentLoss):\n    def forward(self, a, b):\n        calls[0] += 1\n"
                "        out = super().forward(a, b)\n"
                "        return out * float('nan') if calls[0] == 3 else out\ntrainer.NTXentLoss = NanAt3")
    run = tmp_path / "nan"
    res = simclr(tmp_path, "pretrain", *TINY, "--epochs", "1", "--run-dir", str(run), patch=nan_at_3)
    assert res.returncode == 1
    st = read_status(run)
    assert (st.state, st.health) == ("failed", "diverged")
    assert st.health_reason == "diverged: loss became nan at step 2"
    assert "loss became nan at step 2" in read_json(run / "status.json")["error"]


def test_health_module_constants_are_the_documented_ones():
    doc = (ROOT / "docs" / "RUN_DIRECTORY.md").read_text()
    assert (health.STD_COLLAPSED, health.LOSS_FLAT, health.CHANCE_RATIO, health.MIN_EPOCHS) == (0.1, 0.01, 0.99, 2)
    assert "## Health" in doc and "`health/std` < 0.1" in doc

"""One call that checks and times the whole GPU path: run it first on any machine with a GPU.

    python3 bench/gpu_check.py                          # one CUDA device, under 8 minutes
    python3 bench/gpu_check.py --json $OUT/gpu.json     # where the JSON report goes
    python3 bench/gpu_check.py --allow-cpu --quick      # the script itself, on a CPU (tests)

No data set is downloaded: every check trains on synthetic CIFAR-shaped data (32 px, ten
classes). Each check runs on its own, so one that fails is recorded (its error in one line,
the traceback in the report) and the others still run. Checks:

* ``step <precision> <layout>``: the real training loop (``core.training.trainer.train``) on the
  ``cifar10-resnet18`` recipe (ResNet-18 width 64, batch 512, LARS, BatchedViews on the
  device), fp32 and bf16 autocast, each in channels_last and in NCHW: milliseconds per step,
  image pairs per second, and bf16's first-step loss against fp32's (same weights, same batch).
* ``recipe epoch``: the recipe as ``simclr pretrain --preset cifar10-resnet18`` runs it on a
  GPU (bf16, channels_last), one whole epoch of 50,000 synthetic images: seconds per
  epoch and images per second.
* ``DataParallel``: ``nn.DataParallel`` over every visible GPU, a few steps in this process
  (with one GPU its loss must equal the bare model's); with several, also
  ``simclr pretrain --data-parallel``.
* ``DDP (torchrun)``: NCCL, ``torchrun --standalone --nproc-per-node <visible GPUs> -m core
  pretrain``: exit 0, world size in meta.json, throughput.
* ``pretrain + kNN monitor`` / ``stop + resume``: ``simclr pretrain --device cuda`` with the
  kNN monitor every epoch, SIGTERM mid-run (stopped, with a checkpoint at the step it
  stopped), then ``--resume`` to the end (loss steps continue without duplicates).
* ``linear-eval``, ``knn``, ``finetune``: each evaluation command on that run, on CUDA.

Prints a markdown table to stdout and writes the JSON report (rewritten after every check,
so a run cut short still leaves one). Exit code: 0 all checks passed, 1 some failed or were
skipped for the time budget, 2 no CUDA device (one line).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


class Sizes:
    """What the checks train: the real recipe on a GPU, a toy on a CPU (--allow-cpu)."""

    def __init__(self, quick: bool, on_gpu: bool) -> None:
        small = quick or not on_gpu
        self.width, self.image_size = (8, 16) if small else (64, 32)
        self.batch = 32 if small else 512
        self.timed_steps, self.warmup_steps = (2, 1) if small else (20, 5)
        self.epoch_images = 512 if small else 50_000  # CIFAR-10's training set
        self.cli_width = 8 if small else 64
        self.cli_epochs, self.cli_stop_after = (6, 10) if small else (60, 40)


def recipe_config(sizes: Sizes, precision: str, device: str, **changes: Any):
    from core.config import PretrainConfig, preset
    values = {**preset("cifar10-resnet18"), "dataset": "synthetic", "width": sizes.width,
              "image_size": sizes.image_size, "batch_size": sizes.batch, "precision": precision,
              "device": device, "knn_every": 0, **changes}
    return PretrainConfig(**values)


# ---------------------------------------------------------------------- in-process training
@contextlib.contextmanager
def layout_env(channels_last: bool):
    """core.simclr.layout's override, so the trainer builds (and feeds) the model in this layout."""
    old = os.environ.get("SIMCLR_CHANNELS_LAST")
    os.environ["SIMCLR_CHANNELS_LAST"] = "1" if channels_last else "0"
    try:
        yield
    finally:
        if old is None:
            del os.environ["SIMCLR_CHANNELS_LAST"]
        else:
            os.environ["SIMCLR_CHANNELS_LAST"] = old


def train_steps(cfg, device, steps: int, root: Path, images: int | None = None, data_parallel: bool = False,
                seed: int = 0) -> dict[str, Any]:
    """``steps`` steps of ``core.training.trainer.train`` on synthetic data: per-step seconds and losses."""
    import torch

    from core.training import trainer
    from core.training.data import synthetic
    from core.training.model import build_training_model, make_optimizer, wrap_model
    from core.training.pipeline import TensorPipeline, augment_config
    from core.training.runlog import RunLog
    from core.training.session import Progress, Session
    from core.training.stopping import StopGuard

    class TimedLog(RunLog):
        def running(self, prog, spe):
            super().running(prog, spe)
            self.marks, self.losses = [time.perf_counter()], []

        def step(self, prog, spe, loss, lr):
            super().step(prog, spe, loss, lr)
            self.marks.append(time.perf_counter())
            self.losses.append(loss)

        def say(self, text):  # stdout is the report's
            pass

    torch.manual_seed(seed)
    n = images or max(cfg.batch_size * steps, cfg.batch_size * 2)
    pipe = TensorPipeline(synthetic(n, cfg.image_size, seed=seed), augment_config(cfg), cfg.batch_size, cfg.seed,
                          device)
    model = build_training_model(cfg, device)
    optimizer = make_optimizer(cfg, model)
    if data_parallel:
        model = torch.nn.DataParallel(model)
    else:
        model = wrap_model(cfg, model, device)
    scaler = torch.amp.GradScaler(device.type, enabled=False)
    run_dir = Path(tempfile.mkdtemp(dir=root, prefix="steps-"))
    log = TimedLog(run_dir, cfg, argv=["gpu_check"])
    prog = Progress(total_steps=min(steps, len(pipe)))
    trainer.train(Session(cfg, device, pipe, model, optimizer, scaler, None, prog, log), StopGuard())  # saves nothing
    log.close()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = [b - a for a, b in zip(log.marks, log.marks[1:])]
    return {"seconds": seconds, "losses": log.losses, "steps_per_epoch": len(pipe)}


def check_steps(sizes: Sizes, device, root: Path) -> list[dict[str, Any]]:
    """fp32 / bf16 x channels_last / NCHW: the same recipe, the same seed, the same batches."""
    import torch
    rows, first_loss = [], {}
    for precision in ("fp32", "bf16"):
        for channels_last in (True, False):
            name = f"step {precision} {'channels_last' if channels_last else 'NCHW'}"

            def one(precision=precision, channels_last=channels_last):
                with layout_env(channels_last):
                    cfg = recipe_config(sizes, precision, device.type)
                    out = train_steps(cfg, device, sizes.warmup_steps + sizes.timed_steps, root)
                timed = out["seconds"][sizes.warmup_steps:]
                step_s = statistics.median(timed)
                first_loss[(precision, channels_last)] = out["losses"][0]
                finite = all(v == v and abs(v) != float("inf") for v in out["losses"])
                from core.training.device import amp_dtype
                result = {"autocast": str(amp_dtype(cfg, device)).replace("torch.", ""),
                          "ms_per_step": round(step_s * 1e3, 2), "pairs_per_s": round(cfg.batch_size / step_s, 1),
                          "first_loss": round(out["losses"][0], 5), "last_loss": round(out["losses"][-1], 5),
                          "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)
                          if device.type == "cuda" else None}
                if not finite:
                    raise AssertionError(f"non-finite loss: {out['losses']}")
                if precision == "bf16" and ("fp32", channels_last) in first_loss:
                    ref = first_loss[("fp32", channels_last)]
                    rel = abs(out["losses"][0] - ref) / abs(ref)
                    result["first_loss_vs_fp32"] = round(rel, 5)
                    if rel > 0.02:
                        raise AssertionError(f"bf16's first loss {out['losses'][0]:.4f} is {rel:.1%} "
                                             f"from fp32's {ref:.4f}")
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                return result
            rows.append((name, one))
    return rows


def check_recipe_epoch(sizes: Sizes, device, root: Path) -> dict[str, Any]:
    """One whole epoch of the cifar10-resnet18 recipe as the runner would train it (auto precision)."""
    cfg = recipe_config(sizes, "auto", device.type)
    spe = sizes.epoch_images // cfg.batch_size
    out = train_steps(cfg, device, spe, root, images=sizes.epoch_images)
    assert out["steps_per_epoch"] == spe, out["steps_per_epoch"]
    epoch_s = sum(out["seconds"])
    steady = statistics.median(out["seconds"][min(5, len(out["seconds"]) - 1):])
    return {"seconds_per_epoch": round(epoch_s, 2), "steps": spe,
            "images_per_s": round(2 * cfg.batch_size * spe / epoch_s, 1),
            "steady_images_per_s": round(2 * cfg.batch_size / steady, 1),
            "precision": "bf16 autocast" if device.type == "cuda" else "fp32"}


def check_data_parallel(sizes: Sizes, device, root: Path) -> dict[str, Any]:
    import torch
    n = torch.cuda.device_count() if device.type == "cuda" else 1
    cfg = recipe_config(sizes, "fp32", device.type)
    steps = 3
    wrapped = train_steps(cfg, device, steps, root, data_parallel=True)
    result = {"gpus": n, "ms_per_step": round(statistics.median(wrapped["seconds"][1:]) * 1e3, 2),
              "losses": [round(v, 5) for v in wrapped["losses"]]}
    if n == 1:  # DataParallel over one device is the model itself: the same numbers
        bare = train_steps(cfg, device, steps, root)
        diff = max(abs(a - b) for a, b in zip(wrapped["losses"], bare["losses"]))
        result["max_loss_diff_vs_bare"] = diff
        if diff > 1e-3:
            raise AssertionError(f"DataParallel over one GPU moved the loss by {diff}")
    else:
        cli(["pretrain", *cli_flags(sizes, device), "--data-parallel", "true", "--max-steps", "10",
                   "--knn-every", "0", "--run-dir", str(root / "dp")], timeout=240)
        result["cli_pretrain_data_parallel"] = read_status(root / "dp")["state"]
    return result


# ---------------------------------------------------------------------- the command line
DEADLINE = [float("inf")]  # time.monotonic() by which every check should be done (--budget)


def time_left(timeout: float) -> float:
    """A subprocess's timeout: its own, cut to what the budget has left (plus a minute's grace)."""
    return max(10.0, min(timeout, DEADLINE[0] + 60 - time.monotonic()))


def runner_env() -> dict[str, str]:
    """This process's environment, with this checkout first on the path of `python -m core`."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


def cli(args: list[str], timeout: float, launcher: list[str] | None = None) -> subprocess.CompletedProcess:
    """The command line in its own session; on a timeout its whole process group (torchrun's
    workers too) gets SIGTERM, then SIGKILL, so nothing holds the GPU for the next check."""
    cmd = (launcher or [sys.executable]) + ["-m", "core", *args]
    env = runner_env()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=time_left(timeout))
    except subprocess.TimeoutExpired:
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 15)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.communicate(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        raise AssertionError(f"`{' '.join(cmd[-len(args) - 2:])}` did not end within its time") from None
    res = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
    if res.returncode != 0:
        tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise AssertionError(f"`{' '.join(cmd[-len(args) - 2:])}` exited {res.returncode}: {tail[0]}")
    return res


def cli_flags(sizes: Sizes, device) -> list[str]:
    size = "32" if device.type == "cuda" else "16"
    return ["--preset", "tiny", "--width", str(sizes.cli_width), "--image-size", size,
            "--device", device.type]


def read_status(run: Path) -> dict[str, Any]:
    return json.loads((run / "status.json").read_text())


def metrics(run: Path, tag: str) -> list[dict[str, Any]]:
    from core.runs import read_metrics  # leaves a line still being written for later
    return [r for r in read_metrics(run / "metrics.jsonl")[0] if r["tag"] == tag and "job" not in r]


def check_ddp(sizes: Sizes, device, root: Path) -> dict[str, Any]:
    import torch
    world = torch.cuda.device_count() if device.type == "cuda" else 2
    run = root / "ddp"
    t0 = time.perf_counter()
    cli(["pretrain", *cli_flags(sizes, device), "--batch-size", str(32 * world), "--subset", str(max(256, 64 * world)),
         "--max-steps", "20",
         "--knn-every", "0", "--run-dir", str(run)], timeout=300,
        launcher=[sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={world}"])
    meta, status = json.loads((run / "meta.json").read_text()), read_status(run)
    assert meta["world_size"] == world, meta["world_size"]
    assert status["state"] == "finished" and status["step"] == 20, status
    rates = metrics(run, "train/images_per_sec")
    return {"world_size": world, "backend": "nccl" if device.type == "cuda" else "gloo",
            "note": "one GPU: a world of one (NCCL set up, SyncBatchNorm and the gather run, nothing to exchange)"
            if world == 1 else "",
            "seconds_with_startup": round(time.perf_counter() - t0, 1),
            "images_per_s": round(rates[-1]["value"], 1) if rates else None}


def check_pretrain_monitor(sizes: Sizes, device, root: Path) -> dict[str, Any]:
    run = root / "run"
    t0 = time.perf_counter()
    cli(["pretrain", *cli_flags(sizes, device), "--epochs", "2", "--knn-every", "1", "--run-dir", str(run)],
        timeout=300)
    knn = metrics(run, "knn/top1")
    assert [r["epoch"] for r in knn] == [1.0, 2.0], knn
    status = read_status(run)
    assert status["state"] == "finished", status
    return {"seconds_with_startup": round(time.perf_counter() - t0, 1), "knn_top1": [round(r["value"], 4) for r in knn],
            "images_per_s": status.get("images_per_sec")}


def check_stop_resume(sizes: Sizes, device, root: Path) -> dict[str, Any]:
    run = root / "stop"
    env = runner_env()
    # width 16 and no epoch checkpoints: last.pt is rewritten every epoch, small (this checks
    # stopping and resuming on the device, not the recipe)
    cmd = [sys.executable, "-m", "core", "pretrain", *cli_flags(sizes, device), "--width", "16", "--epochs",
           str(sizes.cli_epochs), "--checkpoint-every", "0", "--knn-every", "0", "--run-dir", str(run)]
    err = root / "stop.stderr"
    with open(err, "wb") as f:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=f, start_new_session=True)
    try:
        end = time.time() + time_left(180)
        while time.time() < end and proc.poll() is None:
            if (run / "metrics.jsonl").exists() and len(metrics(run, "train/loss")) >= sizes.cli_stop_after:
                break
            time.sleep(0.05)
        assert proc.poll() is None, f"the run ended (exit {proc.returncode}) before it could be stopped"
        os.killpg(proc.pid, signal.SIGTERM)
        code = proc.wait(timeout=time_left(120))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert code == 0, f"SIGTERM: exit {code}: {err.read_text()[-500:]}"
    status = read_status(run)
    assert status["state"] == "stopped", status
    import torch
    saved = torch.load(run / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    assert saved["progress"]["step"] == status["step"], (saved["progress"]["step"], status["step"])
    stopped_at = status["step"]
    cli(["pretrain", "--resume", str(run)], timeout=300)
    status = read_status(run)  # finished: the steps after the stop, then nothing repeated
    steps = [r["step"] for r in metrics(run, "train/loss")]
    assert status["state"] == "finished" and steps == list(range(1, status["total_steps"] + 1)), (status, steps[-5:])
    return {"stopped_at_step": stopped_at, "resumed_to": status["step"], "checkpoint_device": device.type}


def check_eval(kind: str, sizes: Sizes, device, root: Path) -> dict[str, Any]:
    from core.runs import eval_job_name, job_result_path
    run = root / "run"
    args = {"linear-eval": ["linear-eval"], "knn": ["knn"],
            "finetune": ["finetune", "--label-fraction", "0.1", "--epochs", "2"]}[kind]
    t0 = time.perf_counter()
    cli([*args, "--run-dir", str(run), "--device", device.type], timeout=300)
    job = eval_job_name({"linear-eval": "linear", "knn": "knn", "finetune": "finetune"}[kind], "last",
                        label_fraction=0.1 if kind == "finetune" else None)
    result = json.loads(job_result_path(run / "eval" / job).read_text())
    top1 = result["test_top1"]
    assert 0.0 <= top1 <= 1.0, top1
    return {"test_top1": round(top1, 4), "seconds_with_startup": round(time.perf_counter() - t0, 1)}


# ---------------------------------------------------------------------- the report
def environment(device) -> dict[str, Any]:
    import torch
    info = {"python": platform.python_version(), "torch": torch.__version__, "device": str(device),
            "cpu_threads": torch.get_num_threads()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpus=torch.cuda.device_count(), memory_gib=round(props.total_memory / 2**30, 1),
                    capability=f"{props.major}.{props.minor}", cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version(), bf16=torch.cuda.is_bf16_supported(),
                    nccl=".".join(map(str, torch.cuda.nccl.version())) if hasattr(torch.cuda, "nccl") else None)
    return info


def summary(result: dict[str, Any]) -> str:
    keep = {k: v for k, v in result.items() if k not in ("losses",)}
    return ", ".join(f"{k} {v}" for k, v in keep.items())


def run_checks(checks: list[tuple[str, Callable[[], Any]]], budget_s: float,
               after_each: Callable[[list[dict[str, Any]]], None]) -> list[dict[str, Any]]:
    import torch
    t_start, rows = time.perf_counter(), []
    DEADLINE[0] = time.monotonic() + budget_s
    for name, fn in checks:
        if time.perf_counter() - t_start > budget_s:
            rows.append({"check": name, "ok": None, "seconds": 0.0,
                         "error": f"skipped: past the {budget_s:.0f} s budget"})
            continue
        t0 = time.perf_counter()
        try:
            row = {"check": name, "ok": True, "result": fn()}
        except BaseException as e:  # noqa: BLE001 - every check is reported, whatever it raised
            if isinstance(e, KeyboardInterrupt):
                raise
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            row = {"check": name, "ok": False, "error": f"{type(e).__name__}: {first}",
                   "traceback": traceback.format_exc()}
        row["seconds"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # the subprocess checks get the memory this process cached
        after_each(rows)  # a report on disk even if something kills this process later
        print(f"gpu_check: {name}: {'ok' if row['ok'] else row['error']} ({row['seconds']} s)", file=sys.stderr,
              flush=True)
    return rows


def markdown(rows: list[dict[str, Any]], env: dict[str, Any]) -> str:
    head = f"GPU check on {env.get('gpu', env['device'])} (torch {env['torch']}, CUDA {env.get('cuda')})\n\n"
    lines = ["| check | result | seconds | numbers |", "| --- | --- | ---: | --- |"]
    for r in rows:
        verdict = "ok" if r["ok"] else ("skipped" if r["ok"] is None else "FAILED")
        numbers = summary(r["result"]) if r["ok"] else r.get("error", "")
        lines.append(f"| {r['check']} | {verdict} | {r['seconds']} | {numbers.replace('|', '/')} |")
    return head + "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", type=Path, default=Path("gpu_check.json"),
                   help="the JSON report (default: ./gpu_check.json)")
    p.add_argument("--budget", type=float, default=360.0,
                   help="seconds; checks not started by then are skipped, and a running one's commands are cut "
                        "to end within a minute of it (default: 360)")
    p.add_argument("--quick", action="store_true", help="tiny sizes: a check of this script, not of the GPU's speed")
    p.add_argument("--allow-cpu", action="store_true",
                   help="run every check on the CPU (gloo for DDP, no bf16): for testing this script")
    args = p.parse_args(argv)

    import torch
    if not torch.cuda.is_available() and not args.allow_cpu:
        print("gpu_check: no CUDA device is visible (torch.cuda.is_available() is False); run it on a machine "
              "with a GPU", file=sys.stderr)
        return 2
    device = torch.device("cuda", 0) if torch.cuda.is_available() and not args.allow_cpu else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    sizes = Sizes(args.quick, device.type == "cuda")
    try:
        env = environment(device)
    except Exception as e:  # noqa: BLE001 - the checks still run and say what fails
        env = {"device": str(device), "torch": torch.__version__, "error": f"{type(e).__name__}: {e}"}
    report: dict[str, Any] = {"environment": env, "quick": args.quick, "checks": []}
    args.json.parent.mkdir(parents=True, exist_ok=True)

    def save(rows: list[dict[str, Any]]) -> None:
        report["checks"] = rows
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as tmp:
        root = Path(tmp)
        checks: list[tuple[str, Callable[[], Any]]] = []
        checks += check_steps(sizes, device, root)
        checks += [
            ("recipe epoch (cifar10-resnet18)", lambda: check_recipe_epoch(sizes, device, root)),
            ("DataParallel", lambda: check_data_parallel(sizes, device, root)),
            ("DDP (torchrun)", lambda: check_ddp(sizes, device, root)),
            ("pretrain + kNN monitor", lambda: check_pretrain_monitor(sizes, device, root)),
            ("stop + resume", lambda: check_stop_resume(sizes, device, root)),
            ("linear-eval", lambda: check_eval("linear-eval", sizes, device, root)),
            ("knn", lambda: check_eval("knn", sizes, device, root)),
            ("finetune", lambda: check_eval("finetune", sizes, device, root)),
        ]
        t0 = time.perf_counter()
        rows = run_checks(checks, args.budget, save)
        total = time.perf_counter() - t0
    report["total_seconds"] = round(total, 1)
    save(rows)
    print(markdown(rows, env))
    print(f"\n{sum(1 for r in rows if r['ok'])} of {len(rows)} checks passed in {total:.0f} s; report: {args.json}")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

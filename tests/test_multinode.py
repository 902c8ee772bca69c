"""torchrun over two nodes, for real: two node processes on this machine, one rank each.

Each node runs the command a user types on each machine of a cluster (``--nnodes 2
--node-rank 0|1 --master-addr ... --master-port ...``). Node 1 is given a run directory of
its own, as on a machine without the shared filesystem, so any file it wrote would show.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
import torch

from core.training.checkpoint import load_checkpoint
from core.runs import read_json

COMMON = ["pretrain", "--preset", "tiny", "--max-steps", "1", "--batch-size", "8", "--optimizer", "sgd",
          "--lr", "0.5", "--knn-every", "0", "--weight-decay", "0"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(300)
def test_two_nodes_train_like_one_process_on_the_combined_batch(tmp_path):
    env = {**os.environ, "SIMCLR_CACHE": str(tmp_path / ".cache"), "OMP_NUM_THREADS": "1"}
    port = free_port()
    run, elsewhere = tmp_path / "runs" / "two-nodes", tmp_path / "node1-disk" / "two-nodes"
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(rank),
                               "--nproc-per-node", "1", "--master-addr", "127.0.0.1", "--master-port", str(port),
                               "-m", "core", *COMMON, "--run-dir", str(run if rank == 0 else elsewhere)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path,
                              start_new_session=True)
             for rank in (0, 1)]
    try:
        outputs = [node.communicate(timeout=240)[0] for node in nodes]
    finally:
        for node in nodes:
            if node.poll() is None:
                os.killpg(node.pid, 9)
    assert [n.returncode for n in nodes] == [0, 0], "\n".join(o[-2000:] for o in outputs)

    # rank 0 alone wrote the run, and says it ran on two processes
    assert not elsewhere.exists() and not elsewhere.parent.exists()
    meta, status = read_json(run / "meta.json"), read_json(run / "status.json")
    assert meta["world_size"] == 2 and status["state"] == "finished" and status["step"] == 1

    single = subprocess.run([sys.executable, "-m", "core", *COMMON, "--run-dir", str(tmp_path / "single")],
                            capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert single.returncode == 0, single.stderr[-2000:]
    assert read_json(tmp_path / "single" / "meta.json")["world_size"] == 1
    one, two = (load_checkpoint(p / "checkpoints" / "last.pt") for p in (tmp_path / "single", run))
    # the first SGD step's momentum buffer is that step's gradient (weight decay 0): the two
    # nodes' gradients over their 4 + 4 pairs equal one process's over the 8
    grads_one = [s["momentum_buffer"] for s in one["optimizer"]["state"].values()]
    grads_two = [s["momentum_buffer"] for s in two["optimizer"]["state"].values()]
    assert len(grads_one) == len(grads_two) > 10
    for a, b in zip(grads_one, grads_two):
        torch.testing.assert_close(b, a, atol=2e-5, rtol=1e-4)
    assert max(g.abs().max().item() for g in grads_one) > 1e-4  # not a vacuous comparison
    for k, v in one["model"].items():
        if v.is_floating_point():
            torch.testing.assert_close(two["model"][k], v, atol=2e-5, rtol=1e-4, msg=k)

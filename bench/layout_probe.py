"""Which convolutions oneDNN breaks in channels_last on this CPU, and what the layout costs.

    python3 bench/layout_probe.py probe                    # every case below, this CPU's kernels
    python3 bench/layout_probe.py probe --isa AVX2         # the kernels of an AVX2 CPU (ONEDNN_MAX_CPU_ISA)
    python3 bench/layout_probe.py speed --widths 4,6,8,16  # NCHW vs channels_last, a whole fwd+bwd

``probe`` runs one single convolution per process (a crash, abort or hang there cannot take
this driver down): forward and backward ten times in channels_last on a batch of 16, for
several input sizes, with the output and both gradients compared against the same
convolution in NCHW. Cases: input channels x output channels x kernel 1/3 x stride 1/2. It
prints every case that crashed, hung (``--timeout`` seconds) or disagreed (relative error
over 1e-4), then a one-line summary. ``core/simclr/layout.py`` states the rule these runs gave.

``speed`` times our ResNet-18 (CIFAR stem) forward + backward of ``--batch`` images in both
layouts, alternating, in this one process, and prints the NCHW / channels_last ratio.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

ONE_CASE = """
import sys, torch
cin, cout, k, s = map(int, sys.argv[1:5])
torch.manual_seed(0)
for size in map(int, sys.argv[5].split(",")):
    conv = torch.nn.Conv2d(cin, cout, k, s, padding=k // 2, bias=False)
    x = torch.randn(16, cin, size, size, requires_grad=True)
    ref = conv(x)
    g = torch.randn_like(ref)
    ref.backward(g)
    wref, xref = conv.weight.grad.clone(), x.grad.clone()
    nhwc = torch.nn.Conv2d(cin, cout, k, s, padding=k // 2, bias=False).to(memory_format=torch.channels_last)
    nhwc.load_state_dict(conv.state_dict())
    xl = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_(True)
    err = 0.0
    for _ in range(10):
        nhwc.weight.grad, xl.grad = None, None
        y = nhwc(xl)
        y.backward(g.contiguous(memory_format=torch.channels_last))
        for a, b in ((y, ref), (nhwc.weight.grad, wref), (xl.grad, xref)):
            err = max(err, ((a - b).abs().max() / (b.abs().max() + 1e-12)).item())
    print(size, err, flush=True)
"""


def probe(args: argparse.Namespace) -> int:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if args.isa:
        env["ONEDNN_MAX_CPU_ISA"] = args.isa
    cases = list(itertools.product(args.cin, args.cout, (1, 3), (1, 2)))

    def run(case):
        cmd = [sys.executable, "-c", ONE_CASE, *map(str, case), args.sizes]
        try:
            p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
        except subprocess.TimeoutExpired:
            return case, "hang", None, []
        done = [line.split() for line in p.stdout.splitlines()]
        err = max((float(e) for _, e in done), default=0.0)
        return case, ("crash" if p.returncode else "ok"), p.returncode, [int(s) for s, _ in done], err

    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(run, cases))
    bad = []
    for case, result, code, sizes, *err in rows:
        wrong = bool(err) and err[0] > 1e-4
        if result != "ok" or wrong:
            bad.append(case)
            what = {"ok": f"error {err[0]:.1e}" if err else "", "crash": f"crash (exit {code})"}.get(result, result)
            print(f"in={case[0]:>3} out={case[1]:>3} k={case[2]} stride={case[3]}: {what}; sizes done {sizes}")
    isa = args.isa or "native"
    print(f"{len(bad)} of {len(cases)} cases broke with ISA {isa} (torch {torch_version()}, sizes {args.sizes})")
    if args.json:
        args.json.write_text(json.dumps({"isa": isa, "bad": bad, "cases": len(cases)}))
    return 0


def torch_version() -> str:
    import torch
    return torch.__version__


def speed(args: argparse.Namespace) -> int:
    import torch
    sys.path.insert(0, str(REPO))
    from core.simclr.models import build_model
    torch.manual_seed(0)
    print(f"threads {torch.get_num_threads()}, batch {args.batch}, ONEDNN_MAX_CPU_ISA="
          f"{os.environ.get('ONEDNN_MAX_CPU_ISA', 'native')}")
    for size in args.image_sizes:
        for width in args.widths:
            sides = {}
            for fmt in (torch.contiguous_format, torch.channels_last):
                model = build_model("resnet18", width, size, 128).to(memory_format=fmt)
                sides[fmt] = (model, torch.randn(args.batch, 3, size, size).contiguous(memory_format=fmt), [])
            for r in range(args.repeats + 1):  # the first round warms up
                for model, x, times in sides.values():
                    t = time.perf_counter()
                    model(x)[1].square().sum().backward()
                    if r:
                        times.append(time.perf_counter() - t)
            a, b = (statistics.median(t) for _, _, t in sides.values())
            print(f"{size} px width {width:>3}: NCHW {a * 1e3:6.0f} ms, channels_last {b * 1e3:6.0f} ms, "
                  f"channels_last is {a / b:.2f}x")
    return 0


def ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    q = sub.add_parser("probe", help="each convolution case in its own process")
    q.add_argument("--isa", default=None, help="ONEDNN_MAX_CPU_ISA for the cases (e.g. AVX2, AVX512_CORE, AVX)")
    q.add_argument("--cin", type=ints, default=list(range(1, 17)) + [24, 32], help="input channel counts")
    q.add_argument("--cout", type=ints, default=[4, 6, 8, 16], help="output channel counts")
    q.add_argument("--sizes", default="3,6,8,12,16,24,32", help="input sizes (px), in one process per case")
    q.add_argument("--timeout", type=float, default=40, help="seconds before a case counts as hung")
    q.add_argument("--jobs", type=int, default=2, help="cases run at once")
    q.add_argument("--json", type=Path, default=None, help="also write the broken cases here")
    s = sub.add_parser("speed", help="NCHW vs channels_last, whole forward + backward")
    s.add_argument("--widths", type=ints, default=[4, 6, 8, 12, 16, 32], help="ResNet-18 widths")
    s.add_argument("--image-sizes", type=ints, default=[24, 32], help="image sizes (px)")
    s.add_argument("--batch", type=int, default=256, help="images per forward pass (a batch of 128 pairs)")
    s.add_argument("--repeats", type=int, default=3, help="timed rounds per layout")
    args = p.parse_args()
    return probe(args) if args.what == "probe" else speed(args)


if __name__ == "__main__":
    sys.exit(main())

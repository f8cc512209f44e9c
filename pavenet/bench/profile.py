"""Where the time of one benchmark step goes: wall time vs device-kernel time, by kind.

Builds the rows of ``pavenet bench`` (random weights, same inputs) and, for each requested
model and compile mode, times ``--steps`` calls and profiles the same number with
``torch.profiler``; the kernels of the trace are summed by kind (convolution, matrix product,
the deformable-attention kernels, inductor's fused kernels, copies, other). On a GPU, a kernel
sum well under the wall time means the step waits on the host (launches, Python); a kernel sum
close to it means the GPU work itself has to shrink. Prints markdown tables.

    pavenet bench profile --device cuda --people 10 --modes default reduce-overhead
    pavenet bench profile --device cpu --size 128 128 --steps 2   # CPU: op table only
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Optional

import torch

from pavenet.bench.runner import Bench, BenchPlan, Case, Networks, resolve
from pavenet.bench.timing import time_callable
from pavenet.infer import COMPILE_MODES
from pavenet.runtime.arguments import Parser, add_size_argument, example_epilog, non_negative_int, positive_int

#: (kind, substrings of the kernel name), the first match wins
KINDS = (("deformable attention", ("_fwd_kernel", "_bwd_kernel")),
         ("inductor fused", ("triton_",)),
         ("convolution", ("conv", "fprop", "implicit", "dgrad", "wgrad")),
         ("matrix product", ("gemm", "nvjet", "cutlass", "matmul", "sm90_xmma")),
         ("copy / fill", ("copy", "memcpy", "memset", "fill", "cat")))


def kind_of(name: str) -> str:
    low = name.lower()
    for kind, keys in KINDS:
        if any(k in low for k in keys):
            return kind
    return "other"


def kernel_times(trace: dict) -> dict[str, float]:
    """Total duration in microseconds of each device kernel name of a Chrome trace."""
    totals: dict[str, float] = {}
    for event in trace.get("traceEvents", []):
        if event.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset") and "dur" in event:
            totals[event["name"]] = totals.get(event["name"], 0.0) + float(event["dur"])
    return totals


def by_kind(kernels: dict[str, float], steps: int) -> dict[str, float]:
    """Milliseconds per step of each kind."""
    out: dict[str, float] = {}
    for name, us in kernels.items():
        out[kind_of(name)] = out.get(kind_of(name), 0.0) + us / 1e3 / steps
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def profile(step, steps: int, device: torch.device) -> tuple[dict, torch.profiler.profile]:
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(path))
        trace = json.loads(path.read_text())
    return trace, prof


def report(label: str, wall_ms: float, kernels: dict[str, float], steps: int) -> str:
    lines = [f"## {label}", "", f"wall {wall_ms:.2f} ms per step (median)"]
    if not kernels:
        return "\n".join(lines + ["no device kernels in the trace (CPU run)", ""])
    kinds = by_kind(kernels, steps)
    total = sum(kinds.values())
    lines += [f"device kernels {total:.2f} ms per step ({100 * total / wall_ms:.0f}% of wall)", "",
              "| kind | ms per step | share of kernel time |", "|---|---|---|"]
    lines += [f"| {k} | {ms:.3f} | {100 * ms / total:.1f}% |" for k, ms in kinds.items()]
    lines += ["", "| top kernels | ms per step |", "|---|---|"]
    top = sorted(kernels.items(), key=lambda kv: -kv[1])[:15]
    lines += [f"| `{name[:90]}` | {us / 1e3 / steps:.3f} |" for name, us in top]
    return "\n".join(lines + [""])


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    ap = Parser(prog=prog, description=__doc__.splitlines()[0],
                epilog=example_epilog("pavenet bench profile --device cuda --people 10 --modes default reduce-overhead",
                                      "pavenet bench profile --device cpu --size 128 128 --steps 2"))
    ap.add_argument("--device", default=None, help="cpu or cuda (default: CUDA when available)")
    ap.add_argument("--config", default=None,
                    help="pavenet config (default: as pavenet bench, pavenet_r50 on CUDA, synthetic_tiny on CPU)")
    add_size_argument(ap, "--size", default=None, help="network input size (default: as pavenet bench)")
    ap.add_argument("--people", type=positive_int, default=10, help="people in the two-stage pipeline's frames")
    ap.add_argument("--dtype", default=None, choices=["float32", "bfloat16"],
                    help="default: bfloat16 on CUDA, float32 elsewhere")
    ap.add_argument("--modes", nargs="+", default=["eager", "default"], choices=["eager", *COMPILE_MODES],
                    help="eager and/or torch.compile modes")
    ap.add_argument("--models", nargs="+", default=["pavenet", "two_stage"], choices=["pavenet", "two_stage"],
                    help="pipelines to profile")
    ap.add_argument("--steps", type=positive_int, default=5, help="timed and profiled calls")
    ap.add_argument("--warmup", type=non_negative_int, default=3, help="untimed calls first (at least 2 are made)")
    return ap


def profile_mode(args: argparse.Namespace, mode: str, dtype: str) -> None:
    """Time, profile and print each of ``args.models`` in one compile mode (or eager)."""
    s = resolve(BenchPlan(device=args.device, config=args.config, size=args.size, people=(args.people,),
                          dtypes=(dtype,), compile_mode=mode if mode != "eager" else "default"))
    bench = Bench(s, Networks(s))
    for model in args.models:
        case = Case(model, "streaming" if model == "pavenet" else "per_frame", args.people, 1, dtype,
                    mode != "eager")
        step = bench.steps(case, case.compiled)[0]
        wall = time_callable(step, max(args.warmup, 2), args.steps, bench.sync).median_ms
        trace, prof = profile(step, args.steps, s.device)
        label = f"{model} {case.mode}, {mode}, {args.people} people, {dtype}, {s.size[0]}x{s.size[1]}"
        print(report(label, wall, kernel_times(trace), args.steps), flush=True)
        if s.device.type != "cuda":
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12), flush=True)


def main(argv: Optional[list[str]] = None, prog: Optional[str] = None) -> int:
    args = build_parser(prog).parse_args(argv)
    dtype = args.dtype or ("bfloat16" if str(args.device or "").startswith("cuda") else "float32")
    for mode in args.modes:
        profile_mode(args, mode, dtype)
    return 0

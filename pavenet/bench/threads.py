"""Training under CPU load: pavenet's thread planning vs torch's default and one thread.

For 0, 1 and 2 competing busy processes (each a pure-Python spin loop, like another program
keeping a core), times ``pavenet train`` of 20 steps of the shipped ``synthetic_tiny`` config (wall time
including start-up, one run each, ``python -m pavenet`` of this interpreter) under three settings:

* ``pavenet``: what the command line does now (threads from the free cores, passive OpenMP
  waiting when cores are busy);
* ``torch default``: ``--threads`` = all usable cores and OpenMP's own wait policy (the old
  behaviour);
* ``one thread``: ``--threads 1``;
* ``2 processes``: ``--processes 2 --batch-size 1`` (two processes of one thread each share the
  batch of two clips, as ``pavenet demo --processes 2`` trains).

It prints a table of seconds and ratios (to the same setting's quiet time, and to one thread under
the same load) and writes it as JSON. Run it alone: other jobs distort every number.

    pavenet bench threads --out benchmarks/results/threads.json
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

from pavenet.bench.report import write_atomic
from pavenet.runtime.arguments import Parser, example_epilog, non_negative_int, positive_int

SETTINGS = {"pavenet": [], "torch default": ["--threads", str(len(os.sched_getaffinity(0)))],
            "one thread": ["--threads", "1"], "2 processes": ["--processes", "2", "--batch-size", "1"]}
CONFIG = "synthetic_tiny"


def pavenet_command(*args: str) -> list[str]:
    """``python -m pavenet ARGS`` with this interpreter (works from any folder once installed)."""
    return [sys.executable, "-m", "pavenet", *args]


def busy_processes(count: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]


def timed_train(data: Path, out: Path, extra: list[str], steps: int) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    cmd = pavenet_command("train", str(CONFIG), "--out", str(out), "--set", f"data.root={data}",
                          f"train.max_steps={steps}", "data.num_workers=0", *extra)
    start = time.monotonic()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - start


def measure(data: Path, work: Path, steps: int, loads: list[int]) -> dict:
    seconds: dict[str, dict[int, float]] = {name: {} for name in SETTINGS}
    for load in loads:
        procs = busy_processes(load)
        try:
            time.sleep(1.0)
            for name, extra in SETTINGS.items():
                seconds[name][load] = timed_train(data, work / f"{name.replace(' ', '_')}_{load}", extra, steps)
                print(f"{load} busy, {name}: {seconds[name][load]:.1f} s", flush=True)
        finally:
            for p in procs:
                p.kill()
                p.wait()
    return seconds


def table(seconds: dict, loads: list[int]) -> str:
    lines = ["| busy processes | " + " | ".join(f"{n} (s)" for n in SETTINGS) +
             " | pavenet / its quiet | pavenet / one thread | torch default / one thread"
             " | 2 processes / their quiet | 2 processes / pavenet |",
             "|---" * (len(SETTINGS) + 6) + "|"]
    for load in loads:
        cells = [f"{seconds[n][load]:.1f}" for n in SETTINGS]
        p, d, one, two = (seconds[n][load] for n in ("pavenet", "torch default", "one thread", "2 processes"))
        quiet, two_quiet = seconds["pavenet"][loads[0]], seconds["2 processes"][loads[0]]
        lines.append(f"| {load} | " + " | ".join(cells) + f" | {p / quiet:.2f} | {p / one:.2f} | {d / one:.2f}"
                     f" | {two / two_quiet:.2f} | {two / p:.2f} |")
    return "\n".join(lines)


def build_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    parser = Parser(prog=prog, description=__doc__.splitlines()[0],
                    epilog=example_epilog("pavenet bench threads --out benchmarks/results/threads.json"))
    parser.add_argument("--out", default="benchmarks/results/threads_under_load.json", help="JSON report to write")
    parser.add_argument("--steps", type=positive_int, default=20, help="training steps per timed run")
    parser.add_argument("--loads", type=non_negative_int, nargs="+", default=[0, 1, 2],
                        help="numbers of competing busy processes")
    return parser


def main(argv: Optional[list[str]] = None, prog: Optional[str] = None) -> int:
    args = build_parser(prog).parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        subprocess.run(pavenet_command("synth", str(data), "--videos", "4", "--val-videos", "1",
                                       "--frames", "12"), check=True, stdout=subprocess.DEVNULL)
        seconds = measure(data, Path(tmp), args.steps, args.loads)
    text = table(seconds, args.loads)
    print(text)
    report = {"date": time.strftime("%Y-%m-%d"), "cores": len(os.sched_getaffinity(0)), "steps": args.steps,
              "seconds": {n: {str(k): v for k, v in s.items()} for n, s in seconds.items()}, "table": text}
    write_atomic(Path(args.out), json.dumps(report, indent=2))
    return 0

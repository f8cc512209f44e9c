"""Per-frame latency of pavenet vs a two-stage (detector + top-down) pipeline, by people count.

The same as ``pavenet bench`` (same options, see ``pavenet bench --help``), for people who
prefer scripts. It writes ``bench.md`` (tables and notes) and ``bench.json`` into ``--out``.

Commands:

    # GPU, published sizes: ResNet-50 pavenet at 800x1333, float32 and bf16, batch 1 and 8
    python benchmarks/two_stage_vs_pavenet.py --device cuda --out runs/bench_cuda
    python benchmarks/two_stage_vs_pavenet.py --device cuda --compile --out runs/bench_cuda_compile
    # compiled rows only, with CUDA graphs (the mode of the README's H200 numbers)
    python benchmarks/two_stage_vs_pavenet.py --device cuda --compile-only --compile-mode reduce-overhead \
        --people 1 10 50 --dtypes bfloat16 --out runs/bench_cuda_graphs

    # CPU: the tiny config at 256x256 against the two-stage baseline at CPU-sized people counts
    nice -n 19 python benchmarks/two_stage_vs_pavenet.py --device cpu --threads 1 \\
        --people 1 3 5 10 --repeats 3 --out runs/bench_cpu

    # smoke test (seconds): tiny sizes
    python benchmarks/two_stage_vs_pavenet.py --quick --device cpu --out runs/bench_quick
"""
from __future__ import annotations

import sys

from pavenet.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))

"""Speed benchmarks, all run by ``pavenet bench``.

Without a name, ``pavenet bench`` runs the latency benchmark, pavenet against a two-stage
(detector + top-down) baseline: ``two_stage`` builds the baseline, ``timing`` times callables
and counts FLOPs, ``runner`` runs the grid and ``report`` writes it. ``pavenet bench NAME`` runs
one of the named benchmarks of :data:`BENCHMARKS`, each a module of this package with
``main(argv, prog) -> int`` and its own options.

This file is imported when the command line builds its parser: no torch import here.
"""
#: The measured pipelines (also the choices of ``pavenet bench --models``).
MODELS = ("pavenet", "pavenet_t1", "two_stage")

#: Named benchmark (a module of this package) -> what it measures (its docstring's first line).
BENCHMARKS: dict[str, str] = {
    "forward":
        "CPU forward timings and parameter counts of the PAVE-Net configs (markdown table).",
    "predict":
        "CPU video inference speed: cached per-frame encoder outputs vs recomputing every window.",
    "onnx":
        "CPU frames per second of video inference, PyTorch vs ONNX Runtime, in one run.",
    "eval":
        "Time evaluate_posetrack on a synthetic set: S sequences x F frames x P people.",
    "threads":
        "Training under CPU load: pavenet's thread planning vs torch's default and one thread.",
    "kernels":
        "Timings of multi-scale deformable attention: the PyTorch reference vs the fast kernel.",
    "profile":
        "Where the time of one benchmark step goes: wall time vs device-kernel time, by kind.",
}

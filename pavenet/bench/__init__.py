"""Speed benchmarks: pavenet against a two-stage (detector + top-down) baseline.

``two_stage`` builds the baseline, ``timing`` times callables and counts FLOPs, ``runner`` runs
the benchmark grid and writes the report (``pavenet bench``).
"""

#: The measured pipelines (also the choices of ``pavenet bench --models``; no torch import here).
MODELS = ("pavenet", "pavenet_t1", "two_stage")

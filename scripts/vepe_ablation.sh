#!/usr/bin/env bash
# VEPE ablation (baseline -> +STPE -> +ICM -> +STDME -> full) on the synthetic hard split.
#
# Usage: scripts/vepe_ablation.sh DEMO_DIR OUT [STEPS] [PARALLEL]
#   DEMO_DIR  a `pavenet demo` output folder (train/val videos in data/, hard-val in data_hard/)
#   STEPS     optimizer steps of each phase (default 500: spatial + temporal = the ~1000 steps
#             the 15-minute CPU demo reaches)
#   PARALLEL  rows trained at once, one thread each (default 2)
# One spatial phase (vepe_tiny_spatial.yaml, T=1) initialises every row's temporal phase; each
# row is then evaluated on hard-val with `pavenet test`. The table goes to OUT/ablation.md.
set -euo pipefail
DEMO=$(realpath "$1"); OUT=$2; STEPS=${3:-500}; PARALLEL=${4:-2}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT"
export OMP_NUM_THREADS=1 GLIBC_TUNABLES=glibc.malloc.mmap_threshold=4294967295

if [ ! -d "$OUT/spatial/checkpoints" ]; then  # an earlier run's spatial phase is reused
    pavenet train "$ROOT/configs/vepe_tiny_spatial.yaml" --out "$OUT/spatial" --no-val \
        --set data.root="$DEMO/data" train.max_steps="$STEPS"
fi

row() {
    local name=$1 config=$2
    pavenet train "$ROOT/configs/$config" --out "$OUT/$name" --no-val \
        --weights "$OUT/spatial" --set data.root="$DEMO/data" train.max_steps="$STEPS" train.init_strict=false
    pavenet test "$ROOT/configs/$config" --weights "$OUT/$name" --split val \
        --set data.root="$DEMO/data_hard" --out "$OUT/$name/hard_val" > "$OUT/$name/hard_val.txt"
}

ROWS=(baseline:vepe_tiny_baseline.yaml stpe:vepe_tiny_stpe.yaml icm:vepe_tiny_icm.yaml
      stdme:vepe_tiny_stdme.yaml full:vepe_tiny.yaml)
running=0
for entry in "${ROWS[@]}"; do
    row "${entry%%:*}" "${entry#*:}" > "$OUT/${entry%%:*}.log" 2>&1 &
    running=$((running + 1))
    if [ "$running" -ge "$PARALLEL" ]; then wait -n; running=$((running - 1)); fi
done
wait

python - "$OUT" "${ROWS[@]}" <<'PY'
import json, sys
from pathlib import Path
out, rows = Path(sys.argv[1]), [r.split(":") for r in sys.argv[2:]]
lines = ["| row | config | hard-val mAP | hard-val MOTA |", "|---|---|---|---|"]
for name, config in rows:
    m = json.loads((out / name / "hard_val" / "metrics.json").read_text())
    mota = (m.get("mota") or {}).get("total")
    lines.append(f"| {name} | {config} | {m['ap']['total']:.1f} | {'n/a' if mota is None else f'{mota:.1f}'} |")
(out / "ablation.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PY

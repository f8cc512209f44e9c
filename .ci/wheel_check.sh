#!/usr/bin/env bash
# Build pavenet's wheel, install it into a fresh venv outside the checkout and run the user
# path from an empty folder: --help, synth, a 2-step train of a shipped config by name, predict
# on what it wrote, and the Python API. Proves that nothing needs the repository (issue 23).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-python3}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export GLIBC_TUNABLES=glibc.malloc.mmap_threshold=4294967295

"$python" -m venv "$work/venv"
quiet_pip() { "$work/venv/bin/pip" -q "$@" 2> >(grep -v "^WARNING: Location" >&2); }
quiet_pip install --upgrade pip
quiet_pip wheel --no-deps --wheel-dir "$work/dist" "$repo"
quiet_pip install "$work"/dist/pavenet-*.whl
mkdir "$work/empty"
cd "$work/empty"
bin="$work/venv/bin"
"$bin/pavenet" --help > /dev/null
"$bin/pavenet" synth data/synthetic --videos 2 --val-videos 1 --frames 6 --size 96x96 --max-persons 2
"$bin/pavenet" train synthetic_tiny --out runs/wheel --no-val --threads 2 \
    --set train.max_steps=2 data.batch_size=1 data.num_workers=0 data.train_short_side=[96,96] \
    data.train_max_size=96 data.test_short_side=96 data.test_max_size=96
"$bin/pavenet" predict "data/synthetic/images/val/*" --weights runs/wheel --out runs/predict --threads 2
test -n "$(find runs/predict -name '*.json' -print -quit)"
REPO="$repo" "$bin/python" - <<'PY'
import os
from pathlib import Path

import pavenet
from pavenet import PoseEstimator, build, load_config

assert not Path(pavenet.__file__).resolve().is_relative_to(os.environ["REPO"]), pavenet.__file__
cfg = load_config("synthetic_tiny")
model, criterion, post = build(cfg)
assert model.num_frames == cfg.model.num_frames
est = PoseEstimator.from_checkpoint("runs/wheel", device="cpu")
print("wheel check: python API ok,", type(est).__name__, "from", pavenet.__file__)
PY
[ "$(ls -A "$work/empty" | sort | tr '\n' ' ')" = "data runs " ]
echo "wheel check: passed (installed in $work/venv, ran in an empty folder)"

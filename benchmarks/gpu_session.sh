#!/usr/bin/env bash
# The GPU checks and timings of the speed work, sized for a short lease on one GPU.
#
# Usage: benchmarks/gpu_session.sh STAGE OUT_DIR
#   check    CUDA tests (Triton parity, auto dispatch, bf16 module, fullgraph compile on CUDA),
#            then `pavenet bench kernels` (deformable attention, reference vs Triton)
#   eager    pavenet bench, eager: bfloat16 for 1..50 people at batch 1 and 8, then float32
#   compiled pavenet bench, torch.compile only (mode from COMPILE_MODE, default reduce-overhead)
#   batched  pavenet alone, compiled, batch 8 only (the batched frames/s), 1 person
#   all      the four in order
#   paths    the user-facing paths on CUDA: `pavenet demo` (bf16 autocast training, evaluation,
#            rendering; DEMO_MINUTES, default 4), then `pavenet predict` on 3 val videos in float32,
#            in bfloat16 with torch.compile, and on the CPU, each scored with `pavenet eval`
#            (needs av, pycocotools, motmetrics: carry wheels where they are missing)
# Runs from the repository root with the python3 that has torch (no install needed: PYTHONPATH).
# Every step has its own time limit, so one stuck step leaves the others' results; each writes
# under OUT_DIR (log.txt and one folder per bench run).
set -u
stage=${1:?usage: gpu_session.sh check|eager|compiled|batched|all|paths OUT_DIR}
out=${2:?usage: gpu_session.sh check|eager|compiled|batched|all|paths OUT_DIR}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 TQDM_DISABLE=1
log=$out/log.txt
py=${PYTHON:-python3}

step() {  # step SECONDS NAME COMMAND...
    local limit=$1 name=$2 start rc
    shift 2
    start=$(date +%s)
    echo "=== $name (limit ${limit}s)" | tee -a "$log"
    timeout "$limit" "$@" 2>&1 | tee -a "$log"
    rc=${PIPESTATUS[0]}
    echo "=== $name: rc $rc, $(( $(date +%s) - start )) s" | tee -a "$log"
}

check() {
    step 20 environment bash -c "nvidia-smi --query-gpu=name,memory.total,driver_version \
        --format=csv,noheader; $py -c 'import torch, triton, torchvision; \
        print(torch.__version__, triton.__version__, torchvision.__version__)'"
    step 150 cuda-tests "$py" -m pytest -q -p no:cacheprovider -k cuda \
        tests/test_deform_attn_triton.py tests/test_compile.py
    step 75 deform-attn-kernels "$py" -m pavenet bench kernels --repeats 10 --warmup 3
}

eager() {
    step 180 bench-bf16-eager "$py" -m pavenet bench --device cuda --people 1 3 5 10 20 50 \
        --dtypes bfloat16 --batch 8 --repeats 10 --warmup 3 --out "$out/bf16"
    step 90 bench-fp32-eager "$py" -m pavenet bench --device cuda --people 1 10 50 \
        --dtypes float32 --batch 8 --repeats 10 --warmup 3 --out "$out/fp32"
}

compiled() {
    step "${COMPILED_LIMIT:-240}" bench-bf16-compiled "$py" -m pavenet bench --device cuda \
        --people 1 10 50 --dtypes bfloat16 --batch 8 --repeats 10 --warmup 3 --compile-only \
        --compile-mode "${COMPILE_MODE:-reduce-overhead}" --out "$out/compiled"
}

batched() {
    step "${BATCHED_LIMIT:-200}" bench-bf16-compiled-batch8 "$py" -m pavenet bench --device cuda \
        --people 1 --dtypes bfloat16 --batch 8 --only-batch --models pavenet --repeats 10 \
        --warmup 3 --compile-only --compile-mode "${COMPILE_MODE:-reduce-overhead}" --out "$out/batched"
}

paths() {
    local work=${WORK:-/tmp/pavenet_gpu_paths} seqs v
    rm -rf "$work" && mkdir -p "$work/gt3"
    step "${DEMO_LIMIT:-300}" demo-cuda "$py" -m pavenet demo --device cuda \
        --minutes "${DEMO_MINUTES:-4}" --out "$work/demo"
    seqs=$(ls "$work/demo/data/images/val" | head -3)
    for v in $seqs; do cp "$work/demo/data/annotations/val/$v.json" "$work/gt3/"; done
    predict_and_score cuda-fp32 --device cuda
    predict_and_score cuda-bf16-compiled --device cuda --amp --compile
    predict_and_score cpu-fp32 --device cpu
    cp "$work/demo/report.md" "$work/demo/training_curve.png" "$out/" 2>/dev/null
    tar czf "$out/predictions.tgz" -C "$work" cuda-fp32 cuda-bf16-compiled cpu-fp32 gt3
}

predict_and_score() {  # predict_and_score NAME PREDICT-OPTIONS...
    local name=$1
    shift
    step 120 "predict-$name" "$py" -m pavenet predict --weights "$work/demo/run_t3" \
        --out "$work/$name" "$@" $(for v in $seqs; do echo "$work/demo/data/images/val/$v"; done)
    step 60 "eval-$name" "$py" -m pavenet eval "$work/gt3" "$work/$name" --json "$out/eval_$name.json"
}

case $stage in
    check) check ;;
    eager) eager ;;
    compiled) compiled ;;
    batched) batched ;;
    all) check; eager; compiled; batched ;;
    paths) paths ;;
    *) echo "unknown stage $stage (check, eager, compiled, batched, all or paths)" >&2; exit 2 ;;
esac

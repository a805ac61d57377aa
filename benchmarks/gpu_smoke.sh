#!/usr/bin/env bash
# What the first GPU run must show, in one go (under 8 minutes on one H100; each section has a time
# budget there, throughput gets what the others left):
#   1. cuda_tests: the CUDA tests (masking CUDA == CPU, no host sync in the training loop on CUDA);
#   2. agreement: the tiny model 20 steps on the demo corpus on CPU and on CUDA, fp32 on both, and on
#      CUDA with its bf16 autocast: the losses after the last step within stated tolerances;
#   3. signal: SIGTERM to the whole process group of a `cmgems pretrain` on CUDA at its first
#      checkpoint: exit 143, nothing left running, a checkpoint holding the fused AdamW state and the
#      CUDA RNG; resumed (across a curriculum switch), the weights of an uninterrupted run;
#   4. pack_memory: a fine-tuning pack of 3 identical runs on the demo task: the GPU memory after each
#      run and each run's peak do not grow;
#   5. throughput: the recipe's real shape (250 sequences per step in micro-batches of 10, 25 and 50,
#      GeneMask's length mix, 512 positions), eager and compiled, dnabert6 and logo: tokens/s, MFU,
#      peak memory, and the recommended micro-batch (dnabert6's best tokens/s that fits memory).
# gpu_smoke.py and bench_pretrain.py hold the checks and their tolerances. Every section logs to
# WORKDIR/<section>.log (a failed one's tail goes to stderr); the last line printed is one JSON object
# with every figure; the exit status is 1 when any section failed. Record the figures in
# benchmarks/RESULTS.md.
#
#   bash benchmarks/gpu_smoke.sh [WORKDIR]          # from the repository root, project installed
#
# CMGEMS_SMOKE_DEVICE=cpu runs the same sections on CPU (CUDA hidden) with small sizes: tiny model,
# one micro-batch, eager only (tests/test_demo.py does, so the script is known to work before a GPU is
# at hand; its figures are not GPU figures). CMGEMS_SMOKE_DEMO=DIR reuses a finished demo run's working
# directory instead of building the demo corpus and PMI table.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
WORK=$(realpath -m "${1:-${OUT:-benchmarks/out}/gpu_smoke}")
DEVICE=${CMGEMS_SMOKE_DEVICE:-cuda}
mkdir -p "$WORK"
: > "$WORK/sections.tsv"
export PYTHONPATH="$REPO/workflow${PYTHONPATH:+:$PYTHONPATH}"
started=$(date +%s)

if [ "$DEVICE" = cuda ]; then
    python -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "gpu_smoke: no CUDA device visible")'
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > "$WORK/gpu.txt" 2>/dev/null \
        || python -c 'import torch; print(torch.cuda.get_device_name())' > "$WORK/gpu.txt"
    TOTAL=470  # seconds for everything; throughput gets what is left of it
    BUDGET_DEMO=90 BUDGET_TESTS=90 BUDGET_AGREEMENT=75 BUDGET_SIGNAL=90 BUDGET_PACK=60
    SIGNAL_STEPS=120
    THROUGHPUT=(--models dnabert6 logo --micro-batch 10 25 50 --sequences-per-step 250 --steps 16 --modes eager compiled)
else
    export CUDA_VISIBLE_DEVICES=""
    echo cpu > "$WORK/gpu.txt"
    TOTAL=900 BUDGET_DEMO=300 BUDGET_TESTS=300 BUDGET_AGREEMENT=300 BUDGET_SIGNAL=300 BUDGET_PACK=300
    SIGNAL_STEPS=24
    THROUGHPUT=(--models tiny --micro-batch 8 --sequences-per-step 16 --steps 4 --modes eager --threads 1)
fi

# section NAME BUDGET COMMAND...: run COMMAND with a time limit, its output in WORK/NAME.log; record
# NAME, exit status, seconds and budget in WORK/sections.tsv; on failure the log's tail to stderr.
section() {
    local name=$1 budget=$2 rc=0 t0
    shift 2
    echo "== $name (budget ${budget} s)"
    t0=$(date +%s)
    timeout --kill-after=20 "$budget" "$@" > "$WORK/$name.log" 2>&1 || rc=$?
    printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$(($(date +%s) - t0))" "$budget" >> "$WORK/sections.tsv"
    if [ "$rc" != 0 ]; then
        { echo "== $name failed (exit $rc$([ "$rc" = 124 ] && echo ", over its time budget")); last lines of $WORK/$name.log:"
          tail -40 "$WORK/$name.log"; } >&2
    fi
    return 0
}

DEMO=${CMGEMS_SMOKE_DEMO:-$WORK/demo}
if [ -z "${CMGEMS_SMOKE_DEMO:-}" ]; then
    mkdir -p "$DEMO" && ln -sfn "$REPO/resources" "$DEMO/resources"
    section demo_data "$BUDGET_DEMO" python -m snakemake -s "$REPO/Snakefile" -d "$DEMO" --configfile "$REPO/config/demo.yaml" \
        --cores all results/demo/corpus results/demo/pmi/pmi.parquet results/demo/tokenizer
fi
rm -f "$WORK"/{agreement,signal,pack_memory,throughput}.json  # no stale figures: a crashed section writes none

section cuda_tests "$BUDGET_TESTS" python -m pytest -q -n0 -p no:cacheprovider tests/test_masking.py \
    tests/test_pretrain.py -k cuda  # one process: one CUDA context
tail -1 "$WORK/cuda_tests.log"
section agreement "$BUDGET_AGREEMENT" python benchmarks/gpu_smoke.py agreement --demo "$DEMO" --out "$WORK/agreement" \
    --json "$WORK/agreement.json"
section signal "$BUDGET_SIGNAL" python benchmarks/gpu_smoke.py signal --demo "$DEMO" --out "$WORK/signal" \
    --steps "$SIGNAL_STEPS" --json "$WORK/signal.json"
section pack_memory "$BUDGET_PACK" python benchmarks/gpu_smoke.py pack-memory --model "$WORK/agreement/reference/model" \
    --task "$REPO/resources/demo/gue/demo_tata" --out "$WORK/pack_memory" --runs 3 --json "$WORK/pack_memory.json"
left=$((TOTAL - ($(date +%s) - started)))
left=$((left > 60 ? left : 60))
section throughput "$left" python benchmarks/bench_pretrain.py "${THROUGHPUT[@]}" --lengths paper --budget $((left - 20)) \
    --json "$WORK/throughput.json"

python benchmarks/gpu_smoke.py summary "$WORK" "$DEVICE" "$started"

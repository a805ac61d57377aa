#!/usr/bin/env bash
# GPU smoke test and figures, in one go (under 8 minutes on one GPU):
#   1. the CUDA tests (masking CUDA == CPU, no host sync in the training step on CUDA);
#   2. a 50-step cm_gems pretraining on the demo data in bf16 (curriculum, checkpoints, MFU);
#   3. the dnabert6 bf16 throughput of the real training loop at 512 positions (tokens/s, MFU), eager
#      and with torch.compile;
#   4. one GUE fine-tuning on the GPU (prom_core_tata from ../shared/data when present, else the demo task).
#      On CPU (below) the demo task.
# The last line printed is one JSON object with the figures; record them in benchmarks/RESULTS.md.
#
#   bash benchmarks/gpu_smoke.sh [WORKDIR]          # from the repository root, project installed
#
# CMGEMS_SMOKE_DEVICE=cpu runs the same steps on CPU with small sizes (tests/test_demo.py does, so
# the script is known to work before a GPU is at hand); CMGEMS_SMOKE_DEMO=DIR reuses a finished
# demo run's working directory instead of building the demo corpus and PMI table.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
WORK=$(realpath -m "${1:-${OUT:-benchmarks/out}/gpu_smoke}")
DEVICE=${CMGEMS_SMOKE_DEVICE:-cuda}
mkdir -p "$WORK"
export PYTHONPATH="$REPO/workflow${PYTHONPATH:+:$PYTHONPATH}"
started=$(date +%s)

if [ "$DEVICE" = cuda ]; then
    python -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "gpu_smoke: no CUDA device visible")'
    GPUS=1 MODEL=dnabert6 MICRO=32 BENCH_STEPS=40 PRETRAIN_STEPS=50 TASK="$REPO/../shared/data/gue/prom/prom_core_tata"
else
    GPUS=0 MODEL=tiny MICRO=8 BENCH_STEPS=8 PRETRAIN_STEPS=20 TASK=""
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > "$WORK/gpu.txt" 2>/dev/null || echo cpu > "$WORK/gpu.txt"

echo "== 1. CUDA tests"
python -m pytest -q -p no:cacheprovider tests/test_masking.py tests/test_pretrain.py -k cuda \
    > "$WORK/cuda_tests.log" 2>&1 || { tail -40 "$WORK/cuda_tests.log"; exit 1; }
tail -1 "$WORK/cuda_tests.log"

echo "== 2. cm_gems pretraining, $PRETRAIN_STEPS steps, demo data"
DEMO=${CMGEMS_SMOKE_DEMO:-$WORK/demo}
if [ -z "${CMGEMS_SMOKE_DEMO:-}" ]; then
    mkdir -p "$DEMO" && ln -sfn "$REPO/resources" "$DEMO/resources"
    python -m snakemake -s "$REPO/Snakefile" -d "$DEMO" --configfile "$REPO/config/demo.yaml" --cores all \
        results/demo/corpus results/demo/pmi/pmi.parquet results/demo/tokenizer > "$WORK/demo_data.log" 2>&1 \
        || { tail -40 "$WORK/demo_data.log"; exit 1; }
fi
rm -rf "$WORK/cm_gems"
python -m cmgems.cli pretrain --corpus "$DEMO/results/demo/corpus" --pmi "$DEMO/results/demo/pmi/pmi.parquet" \
    --tokenizer "$DEMO/results/demo/tokenizer" --out "$WORK/cm_gems" --model tiny --masking cm_gems \
    --masking-options '{"threshold": 40.0}' --max-steps "$PRETRAIN_STEPS" --max-positions 128 \
    --sequences-per-step 32 --batch-size 16 --eval-every 10 --eval-sequences 256 --log-every 5 --save-every 25 \
    --gpus "$GPUS" > "$WORK/cm_gems.log" 2>&1 || { tail -40 "$WORK/cm_gems.log"; exit 1; }

echo "== 3. $MODEL throughput of the training loop, 512 positions"
python benchmarks/bench_pretrain.py --models "$MODEL" --micro-batch "$MICRO" --steps "$BENCH_STEPS" \
    > "$WORK/bench_eager.log" 2>&1 || { tail -40 "$WORK/bench_eager.log"; exit 1; }
tail -2 "$WORK/bench_eager.log" | head -1
if [ "$DEVICE" = cuda ]; then
    python benchmarks/bench_pretrain.py --models "$MODEL" --micro-batch "$MICRO" --steps "$BENCH_STEPS" --compile \
        > "$WORK/bench_compiled.log" 2>&1 || { tail -40 "$WORK/bench_compiled.log"; exit 1; }
    tail -2 "$WORK/bench_compiled.log" | head -1
fi

echo "== 4. GUE fine-tuning"
[ -f "$TASK/train.csv" ] || TASK="$REPO/resources/demo/gue/demo_tata"
rm -rf "$WORK/gue"
python -m cmgems.cli finetune --model "$WORK/cm_gems/model" --train "$TASK/train.csv" --dev "$TASK/dev.csv" \
    --test "$TASK/test.csv" --out "$WORK/gue" --max-length 80 --epochs 3 --lr 1e-3 --batch-size 32 \
    --seed 42 > "$WORK/gue.log" 2>&1 || { tail -40 "$WORK/gue.log"; exit 1; }

python - "$WORK" "$DEVICE" "$started" <<'EOF'
import json, sys, time
from pathlib import Path

work, device, started = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
last_json = lambda path: json.loads(path.read_text().strip().splitlines()[-1])
pretrain = json.loads((work / "cm_gems" / "summary.json").read_text())
gue = json.loads((work / "gue" / "metrics.json").read_text())
figures = {
    "benchmark": "gpu_smoke", "device": device, "gpu": (work / "gpu.txt").read_text().strip(),
    "cuda_tests": (work / "cuda_tests.log").read_text().strip().splitlines()[-1],
    "cm_gems": {k: pretrain[k] for k in ("steps", "switch_step", "final_val_ppl", "tokens_per_s", "mfu", "device")},
    "throughput": [r for name in ("bench_eager.log", "bench_compiled.log") if (work / name).exists()
                   for r in last_json(work / name)["results"]],
    "gue": {"task": gue.get("settings", {}).get("train", ""), "test_mcc": gue["metrics"]["mcc"],
            "train_sequences_per_s": gue.get("train_sequences_per_s")},
    "wall_seconds": int(time.time()) - started,
}
print(json.dumps(figures))
EOF

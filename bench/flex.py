"""FlexAttention (block-sparse GEM mask) against SDPA with the dense mask, side by side in one run.

    python -m bench.flex [--device cpu|cuda] [--lengths 512,2048,4096] [--batch 8] [--layers 2]
                         [--model NAME] [--layouts row,packed] [--modes forward,train]

For each layout, length and mode both paths run the same batch of the same model; each measurement
is a fresh process (so peak memory is its own): median step time, the time ratio dense / flex, and
peak memory (CUDA: max allocated; CPU: max resident set). Layouts:
    row      one GEM row per sequence: half prefix, k = 5 special tokens, the rest suffix (the
             suffix x prefix block, a quarter of the causal pairs, is what GEM forbids)
    packed   the training layout: 64-token reconstruction rows packed into each sequence
             (segments never see each other: most causal pairs are forbidden)
Modes: `forward` (inference, no gradients) and `train` (forward + backward; FlexAttention has no
CPU backward in torch, so on a CPU `train` times the dense path alone and says so).
Model: `--model` (a registry name; default on a CPU a 2-layer model built in code with
SmolLM2-135M's attention shape: hidden 576, 9 heads of 64, 3 KV heads; on CUDA smollm2-135m).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

import torch

from .common import best_of

K = 5
ROW = 64


def _roles(layout: str, B: int, T: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    from lab.gem.masks import Role

    if layout == "row":
        half = (T - K) // 2
        row = [Role.BOS] + [Role.PREFIX] * (half - 1) + [Role.SPECIAL] * K + [Role.SUFFIX] * (T - half - K)
        return torch.tensor([row] * B), None
    n = (ROW - K) // 2
    row = [Role.BOS] + [Role.PREFIX] * (n - 1) + [Role.SPECIAL] * K + [Role.SUFFIX] * (ROW - n - K)
    reps = T // ROW
    roles = torch.tensor([row * reps] * B)
    segments = torch.arange(reps).repeat_interleave(ROW)[None].expand(B, -1).contiguous()
    return roles, segments


def _model(name: str | None, layers: int, device: str, attention: str):
    from lab.weights import load_causal_lm

    if name:
        model, _ = load_causal_lm(name, dtype=torch.bfloat16 if device == "cuda" else torch.float32,
                                  attn_implementation="sdpa")
    else:
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.manual_seed(0)
        cfg = LlamaConfig(vocab_size=1024, hidden_size=576, intermediate_size=1536, num_hidden_layers=layers,
                          num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
                          attn_implementation="sdpa")
        model = LlamaForCausalLM(cfg)
    model.to(device)
    model.set_attn_implementation(attention)
    return model


def measure(args) -> dict:
    """One measurement (run in its own process): {"seconds", "peak_gib"}."""
    from lab.gem import forward

    device = args.device
    model = _model(args.model, args.layers, device, args.attention)
    roles, segments = _roles(args.layout, args.batch, args.length)
    roles = roles.to(device)
    segments = segments.to(device) if segments is not None else None
    ids = torch.randint(3, model.config.vocab_size, roles.shape, device=device)
    train = args.mode == "train"
    model.train(train)
    if not train:
        model.requires_grad_(False)

    def step():
        with torch.set_grad_enabled(train):
            inputs = forward.gem_inputs(model, ids, roles, segments, suffix_sees_bos=True)
            hidden = forward.decoder_of(model)(**inputs).last_hidden_state
            if train:
                hidden.float().pow(2).mean().backward()
        if device == "cuda":
            torch.cuda.synchronize()

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    seconds = best_of(step, repeats=args.repeats, warmup=2)  # the warm-up compiles FlexAttention
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else \
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"seconds": seconds, "peak_gib": peak / 2**30}


def _child(args, attention: str, layout: str, length: int, mode: str) -> dict:
    cmd = [sys.executable, "-m", "bench.flex", "--child", "--device", args.device, "--attention", attention,
           "--layout", layout, "--length", str(length), "--mode", mode, "--batch", str(args.batch),
           "--layers", str(args.layers), "--repeats", str(args.repeats)] + (["--model", args.model] if args.model else [])
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode:
        return {"error": res.stderr.strip().splitlines()[-1] if res.stderr.strip() else f"exit {res.returncode}"}
    return json.loads(res.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(prog="python -m bench.flex", description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--lengths", default="512,2048,4096")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--layers", type=int, default=2, help="layers of the model built in code")
    p.add_argument("--model", default=None, help="a registry model instead (default on CUDA: smollm2-135m)")
    p.add_argument("--layouts", default="row,packed")
    p.add_argument("--modes", default="forward,train")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    for name in ("attention", "layout", "mode"):
        p.add_argument(f"--{name}", default=None, help=argparse.SUPPRESS)
    p.add_argument("--length", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(measure(args)))
        return
    if args.model is None and args.device == "cuda":
        args.model = "smollm2-135m"
    from lab.gem.flex import forbidden_share

    rows = []
    for layout in args.layouts.split(","):
        for length in map(int, args.lengths.split(",")):
            skipped = forbidden_share(*_roles(layout, 1, length))
            for mode in args.modes.split(","):
                dense = _child(args, "sdpa", layout, length, mode)
                flex = ({"error": "no FlexAttention backward on a CPU (torch)"} if mode == "train" and args.device != "cuda"
                        else _child(args, "flex_attention", layout, length, mode))
                row = {"layout": layout, "tokens": length, "batch": args.batch, "mode": mode,
                       "forbidden_share": round(skipped, 3), "dense": dense, "flex": flex}
                if "seconds" in dense and "seconds" in flex:
                    row["speedup"] = dense["seconds"] / flex["seconds"]
                    row["memory_ratio"] = dense["peak_gib"] / flex["peak_gib"]
                rows.append(row)
                print(json.dumps(row), flush=True)
    print(json.dumps({"device": args.device, "model": args.model or f"llama-shaped, {args.layers} layers",
                      "torch": torch.__version__, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()

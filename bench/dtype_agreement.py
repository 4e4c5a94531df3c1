"""bf16 vs fp32 embeddings and speed on this machine: the evidence behind `default_dtype`.

    python -m bench.dtype_agreement [--model smollm2-135m] [--n 300]
"""

from __future__ import annotations

import argparse
import json
import time

from .common import news_sentences


def main():
    import lab

    p = argparse.ArgumentParser()
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--poolings", default="mean,last")
    args = p.parse_args()
    texts = news_sentences(args.n)
    models = {dt: lab.load(args.model, dtype=dt) for dt in ("float32", "bfloat16")}
    for pooling in args.poolings.split(","):
        out, secs = {}, {}
        for dt, gem in models.items():
            t = time.perf_counter()
            out[dt] = gem.encode(texts, pooling=pooling, show_progress_bar=False)
            secs[dt] = time.perf_counter() - t
        cos = (out["float32"] * out["bfloat16"]).sum(-1)
        print(json.dumps({"pooling": pooling, "n": len(texts), "cos_min": float(cos.min()),
                          "cos_mean": float(cos.mean()), "share_ge_0.999": float((cos >= 0.999).mean()),
                          "fp32_s": secs["float32"], "bf16_s": secs["bfloat16"]}))


if __name__ == "__main__":
    main()

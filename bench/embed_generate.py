"""One shared prefill vs embedding and generating separately, over document lengths.

    python -m bench.embed_generate [--model smollm2-135m] [--lengths 128,512,1024,2048,4096]

For each document length L (tokens) and a 16-token answer, measured side by side:
  P  = encode(doc): one prefill of the document with the GEM readout,
  G  = generate(doc + prompt, 16 new tokens) alone, so D = G - P is the decode part,
  separate = encode(doc) then generate(doc + prompt)     ~ 2P + D
  shared   = embed_and_generate(doc, prompt)             ~ P + D
The ideal speed-up is (2P + D) / (P + D); the target is the measured speed-up within 10% of it.
Each time is the median of 3 runs after a warm-up.
Fresh (untrained) GEM tokens are added to the base model: timing does not depend on training.
"""

from __future__ import annotations

import argparse
import json
import logging

from .common import best_of, news_sentences


def doc_of_length(gem, n_tokens: int) -> str:
    text = " ".join(news_sentences(2000))
    ids = gem.tokenizer(text, add_special_tokens=False)["input_ids"][:n_tokens]
    return gem.tokenizer.decode(ids)


def run(model_name: str, lengths: list[int], new_tokens: int = 16) -> list[dict]:
    import lab
    from lab.gem import add_new_gem_tokens

    gem = add_new_gem_tokens(lab.load(model_name), k=1, max_length=max(lengths) + 64)
    gem.gem_config.trained = True
    prompt = "\nQuestion: what is this about?\nAnswer:"
    rows = []
    for L in lengths:
        doc = doc_of_length(gem, L)
        gen_kw = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens)
        P = best_of(lambda: gem.encode(doc), repeats=3)
        G = best_of(lambda: gem.generate(doc + prompt, **gen_kw), repeats=3)
        shared = best_of(lambda: gem.embed_and_generate(doc, prompt, **gen_kw), repeats=3)
        separate = best_of(lambda: (gem.encode(doc), gem.generate(doc + prompt, **gen_kw)), repeats=3)
        D = max(G - P, 1e-9)
        ideal = (2 * P + D) / (P + D)
        speedup = separate / shared
        rows.append({"doc_tokens": L, "P_s": P, "G_s": G, "D_s": D, "shared_s": shared, "separate_s": separate,
                     "speedup": speedup, "ideal": ideal, "speedup_over_ideal": speedup / ideal})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--lengths", default="128,512,1024,2048,4096")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    run(args.model, [int(x) for x in args.lengths.split(",")])


if __name__ == "__main__":
    main()

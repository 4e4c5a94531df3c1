"""Why single words embed badly: in SmolLM2 (no BOS) a text's first token is the attention sink.

A base model's first position collects the attention that has nowhere else to go, and its state
carries little of the token's meaning. For a sentence that is one token of many; for a one-word
text it is the whole text. Mean pooling over a word's tokens, with and without a content-free
token (`<|endoftext|>`) in front of it, on the word-similarity transfer tasks:

    python -m research.sink_words [--model smollm2-135m] [--layers -1,15]
    python -m research.sink_words --perplexity   # the sink's own effect on perplexity

Measured on SmolLM2-135M (Spearman x100; the sink is never pooled): WordSim-353 5.1 -> 20.2 at
the last layer (49.6 at layer 15), SimLex-999 -1.8 -> 5.6 (29.5). This is what the `sink_token`
training option gives every GEM row (`lab.gem.config.GemConfig.sink_token`).
"""

from __future__ import annotations

import argparse

import torch

from lab.gem.masks import Role
from lab.gem.pooling import collate_plans, plan_row, pool_states

SINK = "<|endoftext|>"


@torch.no_grad()
def word_states(gem, words: list[str], sink: str | None, layers: tuple[int, ...], batch_size: int = 64) -> dict:
    """{layer: (n, d) unit vectors}: each word's hidden states at `layer`, mean-pooled over its own
    tokens by the lab's mean readout (`lab.gem.pooling`: the sink, when given, takes the BOS place
    in front and is never pooled), on right-padded batches of plain causal rows."""
    tok = gem.tokenizer
    pre = [tok.convert_tokens_to_ids(sink)] if sink else []
    out: dict[int, list] = {layer: [] for layer in layers}
    for i in range(0, len(words), batch_size):
        plans = [plan_row("mean", tok(w, add_special_tokens=False)["input_ids"], pre, [], {})
                 for w in words[i:i + batch_size]]
        batch = collate_plans(plans, tok.eos_token_id)
        attention_mask = (batch["roles"] != int(Role.PAD)).long()
        hidden = gem.model(input_ids=batch["input_ids"].to(gem.device), attention_mask=attention_mask.to(gem.device),
                           output_hidden_states=True).hidden_states
        for layer in layers:
            out[layer].append(pool_states(hidden[layer].cpu(), batch["pool"]))
    return {layer: torch.nn.functional.normalize(torch.cat(v), dim=-1) for layer, v in out.items()}


def sink_word_similarity(gem, pairs_by_task: dict, layers: tuple[int, ...] = (-1,), sink: str = SINK) -> list[dict]:
    """One dict per (task, sink or not, layer): Spearman of cos(word_1, word_2) with the human scores."""
    from scipy.stats import spearmanr

    rows = []
    for task, pairs in pairs_by_task.items():
        words = sorted({p[0] for p in pairs} | {p[1] for p in pairs})
        index = {w: i for i, w in enumerate(words)}
        for use_sink in (False, True):
            states = word_states(gem, words, sink if use_sink else None, layers)
            for layer, e in states.items():
                sims = [float(e[index[a]] @ e[index[b]]) for a, b, _ in pairs]
                rows.append({"task": task, "sink": use_sink, "layer": layer,
                             "spearman": float(spearmanr(sims, [p[2] for p in pairs]).statistic)})
    return rows


def with_sink(gem, sink: str = SINK):
    """A shallow copy of a GemModel (same weights) that reads every text with `sink` in front, as a
    model trained with `sink_token` does: how much of such a model's perplexity is the token's alone."""
    import copy

    from lab.gem import GemModel
    from lab.gem.config import GemConfig

    out = copy.copy(gem)
    out.sink_ids, out.bos = GemModel.prefix_ids(gem.tokenizer, GemConfig(sink_token=sink))  # as GemModel reads it
    return out


def sink_perplexity(gem, heldout: str, sink: str = SINK) -> list[dict]:
    """One dict per (text set, sink or not): the plain LM's perplexity, measured as the evaluation
    suite does (held-out Wikipedia: 200 rows; news: 100 articles cut to 128 tokens)."""
    from lab.corpora.eval_sets import news_texts
    from lab.evaluation.language import heldout_perplexity, text_perplexity
    from lab.evaluation.suite import SUITES

    suite = SUITES["quick"]
    rows = []
    for use_sink in (False, True):
        model = with_sink(gem, sink) if use_sink else gem
        rows.append({"texts": "Wikipedia (held out)", "sink": use_sink,
                     "perplexity": heldout_perplexity(model, heldout, max_rows=suite.perplexity_rows)})
        rows.append({"texts": "BBC News", "sink": use_sink,
                     "perplexity": text_perplexity(model, news_texts(suite.news_rows), max_tokens=suite.news_max_tokens)})
    return rows


def main(argv: list[str] | None = None) -> int:
    from lab.evaluation.transfer import transfer_data
    from lab.weights.loading import load

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--layers", default="-1,15", help="comma-separated hidden-state layers (-1 = last)")
    p.add_argument("--perplexity", action="store_true",
                   help="instead: the plain LM's perplexity without / with the sink in front (no training)")
    args = p.parse_args(argv)
    if args.perplexity:
        from lab.storage import PROJECT_ROOT
        from lab.training.config import TrainConfig

        rows = sink_perplexity(load(args.model), str(PROJECT_ROOT / TrainConfig().heldout))
        print("| texts | first token | perplexity |\n|---|---|---:|")
        for r in rows:
            print(f"| {r['texts']} | {'after ' + SINK if r['sink'] else 'the text itself'} | {r['perplexity']:.2f} |")
        return 0
    data = transfer_data()
    rows = sink_word_similarity(load(args.model), {t: data[t] for t in ("WordSim-353", "SimLex-999")},
                                tuple(int(x) for x in args.layers.split(",")))
    print("| task | first token | layer | Spearman x100 |\n|---|---|---:|---:|")
    for r in rows:
        print(f"| {r['task']} | {'after ' + SINK if r['sink'] else 'the word itself'} | {r['layer']} | {100 * r['spearman']:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

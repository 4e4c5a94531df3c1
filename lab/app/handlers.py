"""The app's handlers: plain functions of a `Session` (the base model and the GEM model) and the
widgets' values. They return figures, tables and Markdown, raise `ValueError` with a message for
the user on bad input, and report recoverable problems in a `warnings` list. `lab.app.ui` wires
them to Gradio; tests call them directly.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ..corpora.textsets import TextSet, bundled_sets, load_bundled, parse_pasted, parse_upload
from ..gem import GemConfig, GemModel
from ..gem.model import RECONSTRUCT_SLACK
from ..gem.tokens import gem_token_strings, text_ids
from ..weights.loading import load, local_path
from ..weights.registry import DEFAULT_GEM, DEFAULT_MODEL, SHIPPED_GEM
from ..viz import figures
from ..viz.maps import embedding_map, top_k
from .picker import model_choices, pickable_problem  # noqa: F401 (the app's picker: h.model_choices)

log = logging.getLogger(__name__)

MAX_TEXT_TOKENS = 512  # embeddings, generation prompts, documents
MAX_ATTENTION_TOKENS = 48  # the attention tab draws T x T grids per head
MAX_NEW_TOKENS = 128
MAX_QUESTION_TOKENS = 256  # the embed + generate tab's question
MAX_RECONSTRUCT_TOKENS = 64  # the reconstruction tab reads (and decodes) at most this many tokens
MAX_BEAMS = 8  # the reconstruction tab's beam-search width, at most


@dataclass
class Session:
    """The two models the app compares; `pick` swaps either (loading is serialised by a lock).
    allow_any_folder: let the picker load folders outside the working directory."""

    base_name: str = DEFAULT_MODEL
    gem_name: str = DEFAULT_GEM
    base: GemModel | None = None
    gem: GemModel | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    allow_any_folder: bool = False

    def models(self) -> tuple[GemModel, GemModel]:
        with self.lock:
            if self.base is None:
                self.base = load(self.base_name)
            if self.gem is None:
                self.gem = load(self.gem_name)
            if not self.gem.is_gem:
                raise ValueError(f"{self.gem_name} has no trained GEM tokens; pick a GEM checkpoint folder")
            return self.base, self.gem

    def pick(self, base_name: str, gem_name: str) -> str:
        """Load other models (the old ones stay if loading fails). Returns a status line."""
        base_name, gem_name = (base_name or "").strip(), (gem_name or "").strip()
        if not base_name or not gem_name:
            raise ValueError("name both models: a registry name (see `python -m lab models`) or a folder")
        for name in (base_name, gem_name):
            problem = pickable_problem(name, self.allow_any_folder)
            if problem:
                raise ValueError(problem)
        t = time.perf_counter()
        new_base = self.base if base_name == self.base_name and self.base is not None else load(base_name)
        new_gem = self.gem if gem_name == self.gem_name and self.gem is not None else load(gem_name)
        if not new_gem.is_gem:
            raise ValueError(f"{gem_name} is not a GEM checkpoint (no trained GEM tokens); the right-hand "
                             f"model must be one, e.g. {DEFAULT_GEM} or runs/NAME/last")
        with self.lock:
            self.base, self.gem, self.base_name, self.gem_name = new_base, new_gem, base_name, gem_name
        return f"base: **{base_name}** · GEM: **{gem_name}** (loaded in {time.perf_counter() - t:.1f} s)"


# -- input checks -----------------------------------------------------------------------------------
def check_text(text: str | None, what: str = "text") -> str:
    if text is None or not str(text).strip():
        raise ValueError(f"the {what} is empty: type or paste some text")
    return str(text)


def text_warnings(gem: GemModel, text: str, limit: int = MAX_TEXT_TOKENS) -> list[str]:
    """Warnings for a text about to be read: too long (cut), special-token strings (read as text)."""
    out = []
    n = len(gem.text_ids(text))
    if n > limit:
        out.append(f"the text has {n:,} tokens; only the first {limit:,} are used")
    specials = [s for s in gem_token_strings(8) if s in text]
    if specials or "<|" in text:
        out.append("the text contains special-token strings (e.g. <|gem_0|>); they are read as plain "
                   "text, never as the model's GEM tokens")
    return out


def cut_to_tokens(gem: GemModel, text: str, limit: int, what: str = "text") -> tuple[str, list[str]]:
    """(`text` cut to at most `limit` tokens, as the model will read it; a warning when it was cut).
    Every long input of the app goes through here, so no action reads more than it says."""
    ids = gem.text_ids(text)
    if len(ids) <= limit:
        return text, []
    n = limit
    cut = gem.tokenizer.decode(ids[:n])
    while len(gem.text_ids(cut)) > limit and n > 1:  # re-tokenising a cut can merge differently
        n -= 1
        cut = gem.tokenizer.decode(ids[:n])
    return cut, [f"the {what} had {len(ids):,} tokens; only the first {limit:,} were used"]


# -- embeddings tab ---------------------------------------------------------------------------------
def resolve_textset(source: str, set_name: str | None, pasted: str | None, upload: str | None) -> TextSet:
    if source == "bundled":
        return load_bundled(set_name or bundled_sets()[0])
    if source == "paste":
        return parse_pasted(pasted)
    if source == "upload":
        if not upload:
            raise ValueError("no file uploaded: choose a .txt (one text per line) or .csv (text[, label]) file")
        return parse_upload(upload)
    raise ValueError(f"unknown source {source!r}: bundled, paste or upload")


ENCODE_TOKENS_PER_S = 550  # SmolLM2-135M fp32 encode on a 2-core laptop CPU (BENCHMARKS.md): for estimates


def map_estimate_s(gem: GemModel, ts: TextSet) -> float:
    """Rough seconds to embed `ts` with both models (cache misses only), for the progress text."""
    tokens = sum(min(len(x), MAX_TEXT_TOKENS) for x in text_ids(gem.tokenizer, ts.texts)[0])
    return 2 * tokens / ENCODE_TOKENS_PER_S


def _textset_warnings(gem: GemModel, ts: TextSet) -> list[str]:
    warnings = list(ts.warnings)
    long = sum(len(x) > MAX_TEXT_TOKENS for x in text_ids(gem.tokenizer, ts.texts)[0])
    if long:
        warnings.append(f"{long} text(s) are longer than {MAX_TEXT_TOKENS} tokens and were cut")
    if any("<|" in t for t in ts.texts):
        warnings.append("some texts contain special-token strings (e.g. <|gem_0|>); they are read as plain "
                        "text, never as the model's GEM tokens")
    return warnings


def _maps(session: Session, ts: TextSet, base_pooling: str, progress=None):
    """((base emb, base coords), (GEM emb, GEM coords)), reporting progress as (fraction, text)."""
    base, gem = session.models()
    if progress is not None:
        progress(0.0, f"embedding {len(ts.texts)} texts with the base model (about {map_estimate_s(gem, ts):.0f} s "
                      f"for both models on a 2-core CPU; cached afterwards)")
    b = embedding_map(base, ts, base_pooling, max_length=MAX_TEXT_TOKENS)
    if progress is not None:
        progress(0.5, "embedding with the GEM model")
    return b, embedding_map(gem, ts, "gem", max_length=MAX_TEXT_TOKENS)


def embeddings_view(session: Session, source: str, set_name: str | None = None, pasted: str | None = None,
                    upload: str | None = None, base_pooling: str = "mean", progress=None) -> dict:
    """UMAP maps and similarity heatmaps of one text set, base (with `base_pooling`) vs GEM."""
    _, gem = session.models()
    ts = resolve_textset(source, set_name, pasted, upload)
    warnings = _textset_warnings(gem, ts)
    t = time.perf_counter()
    (eb, cb), (eg, cg) = _maps(session, ts, base_pooling, progress)
    secs = time.perf_counter() - t
    idx = figures.label_sorted_sample(len(ts.texts), ts.labels, 40)
    texts, labels = [ts.texts[i] for i in idx], [ts.labels[i] for i in idx] if ts.labels else None
    sorted_by = " sorted by label" if labels else ""
    return {
        "map_base": figures.embedding_map(cb, ts.texts, ts.labels, f"base · {base_pooling} pooling"),
        "map_gem": figures.embedding_map(cg, ts.texts, ts.labels, "GEM · special token"),
        "heat_base": figures.similarity_heatmap(eb[idx] @ eb[idx].T, texts, f"base · {base_pooling}: cosine "
                                                f"({len(idx)} texts{sorted_by})", labels),
        "heat_gem": figures.similarity_heatmap(eg[idx] @ eg[idx].T, texts,
                                               f"GEM: cosine ({len(idx)} texts{sorted_by})", labels),
        "info": f"{len(ts.texts)} texts{' with labels' if ts.labels else ''} · embedded and mapped in {secs:.1f} s "
                f"(cached by the set's hash)",
        "warnings": warnings,
    }


def search(session: Session, query: str, source: str, set_name: str | None = None, pasted: str | None = None,
           upload: str | None = None, k: int = 5, base_pooling: str = "mean", progress=None) -> dict:
    """Top-k texts of the set for `query`, by each model: rows [rank, score, text], and both maps
    with the top-k ringed (numbered by rank) and the query drawn at the mean of its neighbours."""
    base, gem = session.models()
    query = check_text(query, "query")
    ts = resolve_textset(source, set_name, pasted, upload)
    k = int(max(1, min(int(k or 5), 50, len(ts.texts))))
    out = {"warnings": text_warnings(gem, query)}
    maps = dict(zip(("base", "gem"), _maps(session, ts, base_pooling, progress)))
    for name, model, pooling in (("base", base, base_pooling), ("gem", gem, "gem")):
        emb, coords = maps[name]
        q = model.encode(query, pooling=pooling, max_length=MAX_TEXT_TOKENS)
        hits = top_k(q, emb, k)
        out[name] = [[r + 1, round(s, 4), ts.texts[i]] for r, (i, s) in enumerate(hits)]
        top = [i for i, _ in hits]
        title = f"{'base · ' + base_pooling if name == 'base' else 'GEM · special token'}: top {k} for the query"
        # the query itself is not drawn: UMAP cannot place a new text without refitting the map
        out[f"map_{name}"] = figures.embedding_map(coords, ts.texts, ts.labels, title, highlight=top)
    return out


# -- attention tab ----------------------------------------------------------------------------------
def attention_view(session: Session, text: str, split: int | None = None, k: int | None = 0, layer: int = -1,
                   head: int = 0) -> dict:
    """The GEM mask of `prefix | S_1..S_k | suffix` and one head's attention, base (causal) vs GEM.
    k = 0 or None: all of the model's special tokens (what it embeds with)."""
    base, gem = session.models()
    text = check_text(text)
    warnings = text_warnings(gem, text, MAX_ATTENTION_TOKENS)
    text = gem.tokenizer.decode(gem.text_ids(text)[:MAX_ATTENTION_TOKENS])
    n = len(gem.text_ids(text))  # the cut text re-tokenised: what attention() will read
    split = n if split is None or int(split) < 0 else min(int(split), n)
    k = int(k or 0) or len(gem.special_ids)
    if not 1 <= k <= len(gem.special_ids):
        raise ValueError(f"k={k}: this GEM model has {len(gem.special_ids)} special token(s); use 1..{len(gem.special_ids)}")
    gv = gem.attention(text, split=split, k=k)
    bv = base.attention(text, k=0)
    n_layers, n_heads = gv.attentions.shape[:2]
    layer = int(layer) % n_layers
    if not 0 <= int(head) < n_heads:
        raise ValueError(f"head={head}: the model has heads 0..{n_heads - 1}")
    head = int(head)
    base_w, base_mask = on_gem_tokens(bv.attentions[layer % bv.attentions.shape[0], head % bv.attentions.shape[1]],
                                      bv.mask, bv.roles, gv.roles)
    suffix_on_s = gv.share_on("suffix", "special", skip_first_query=True)
    suffix_on_sink = gv.share_on("suffix", "bos", skip_first_query=True) if "bos" in gv.roles else float("nan")
    return {
        "mask": figures.mask_figure(gv.mask, gv.tokens, gv.roles, f"GEM mask: prefix {split} · S × {k} · suffix {n - split}"),
        "base": figures.attention_figure(base_w, gv.tokens, f"base (causal, no S) · layer {layer} · head {head}",
                                         base_mask),
        "gem": figures.attention_figure(gv.attentions[layer, head], gv.tokens,
                                        f"GEM (masked) · layer {layer} · head {head}", gv.mask),
        "info": f"{n} text tokens; {n_layers} layers × {n_heads} heads"
                + (f" · suffix tokens (after the first) put **{suffix_on_s:.0%}** of their attention on S "
                   f"(mean over layers and heads)" if suffix_on_s == suffix_on_s else "")
                + (f", **{suffix_on_sink:.0%}** on the sink (the first token)" if suffix_on_sink == suffix_on_sink else ""),
        "warnings": warnings,
    }


def on_gem_tokens(weights: np.ndarray, mask: np.ndarray, base_roles: list[str],
                  gem_roles: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """A base model's (T, T) attention and mask placed on the GEM row's tokens (T + k + sink), so
    the two grids line up: the S rows and columns are empty (the base model has no S), and so are
    the sink's when the GEM model puts a sink token in front that the base row does not have.

        GEM row:   sink  t1  t2  S1 .. Sk  t3        base row:  t1  t2  t3
        kept:       -    x   x   -  ..  -  x
    """
    keep = np.array([r != "special" for r in gem_roles])
    if "bos" in gem_roles and "bos" not in base_roles:
        keep[gem_roles.index("bos")] = False
    if int(keep.sum()) != len(base_roles):
        raise ValueError(f"the base row has {len(base_roles)} tokens and the GEM row {int(keep.sum())} besides S: "
                         "the two models tokenise this text differently; compare models of the same backbone")
    n = len(gem_roles)
    w = np.full((n, n), np.nan)
    m = np.zeros((n, n), dtype=bool)
    w[np.ix_(keep, keep)] = weights
    m[np.ix_(keep, keep)] = mask
    return w, m


# -- generation tab ---------------------------------------------------------------------------------
def _new_tokens(n) -> int:
    n = int(n or 48)
    if not 1 <= n <= MAX_NEW_TOKENS:
        raise ValueError(f"max new tokens must be between 1 and {MAX_NEW_TOKENS}, got {n}")
    return n


def generate_side_by_side(session: Session, prompt: str, max_new_tokens: int = 48):
    """Yields (base text, GEM text, timing Markdown) as both models stream the same prompt greedily."""
    base, gem = session.models()
    prompt = check_text(prompt, "prompt")
    n = _new_tokens(max_new_tokens)
    note = ""
    ids = gem.text_ids(prompt)
    if len(ids) > MAX_TEXT_TOKENS:
        prompt = gem.tokenizer.decode(ids[:MAX_TEXT_TOKENS])
        note = f"⚠ the prompt had {len(ids):,} tokens; only the first {MAX_TEXT_TOKENS} were used · "
    streams = {"base": base.stream(prompt, n), "gem": gem.stream(prompt, n)}
    texts = {"base": "", "gem": ""}
    t0 = time.perf_counter()
    first: dict[str, float] = {}
    done: dict[str, float] = {}
    while len(done) < 2:
        for name, stream in streams.items():
            if name in done:
                continue
            try:
                texts[name] = next(stream)
                first.setdefault(name, time.perf_counter() - t0)
            except StopIteration:
                done[name] = time.perf_counter() - t0
        timing = note + " · ".join(f"{m}: first token {first.get(m, float('nan')):.2f} s"
                                   + (f", done {done[m]:.2f} s" if m in done else "") for m in ("base", "gem"))
        yield texts["base"], texts["gem"], timing


def default_beams(session: Session) -> int:
    """The GEM model's own reconstruction width (`GemConfig.reconstruct_beams`: 8 for the shipped
    model, 1 greedy for most), read from its folder when it is not loaded yet; at most MAX_BEAMS."""
    if session.gem is not None:
        return min(session.gem.gem_config.reconstruct_beams, MAX_BEAMS)
    try:
        folder = local_path(session.gem_name)  # a shipped name's folder, a run's newest checkpoint
    except FileNotFoundError:  # a shipped checkpoint missing: loading it will say how to get it back
        return 1
    if not (folder / GemConfig.FILENAME).is_file():
        return 1
    return min(GemConfig.load(folder).reconstruct_beams, MAX_BEAMS)


def reconstruct(session: Session, text: str, num_beams: int | None = None) -> dict:
    """Decode `text` back from its special tokens' KV cache alone (paper Appendix B): what
    `GemModel.reconstruct(text, num_beams=...)` hands a user (greedy for 1 beam; None: the model's
    own setting), which stops at EOS or, failing that, at the safeguard (the text's length +
    RECONSTRUCT_SLACK tokens); the info says which."""
    _, gem = session.models()
    text = check_text(text)
    num_beams = gem.gem_config.reconstruct_beams if num_beams is None else num_beams
    if not 1 <= int(num_beams) <= MAX_BEAMS:
        raise ValueError(f"beams={num_beams}: pick 1 (greedy) to {MAX_BEAMS}")
    warnings = text_warnings(gem, text, MAX_RECONSTRUCT_TOKENS)
    t = time.perf_counter()
    ids = gem.text_ids(text)[:MAX_RECONSTRUCT_TOKENS]
    out_ids = gem.reconstruct_ids(gem.tokenizer.decode(ids), max_new_tokens=len(ids) + RECONSTRUCT_SLACK,
                                  num_beams=int(num_beams))
    hits = sum(a == b for a, b in zip(out_ids, ids))
    if len(out_ids) < len(ids) + RECONSTRUCT_SLACK:
        ending = "**stopped** by itself" + (" right where the text ends" if len(out_ids) == len(ids) else
                                            f" after {len(out_ids)} tokens")
    else:
        ending = (f"**did not stop**: it ran on {RECONSTRUCT_SLACK} tokens past the text's end, where the "
                  f"length cap cut it")
    verdict = "the text exactly" if out_ids == ids else f"{hits}/{len(ids)} of the text's tokens in place"
    how = "greedy" if int(num_beams) == 1 else f"beam search, {int(num_beams)} beams"
    return {"text": gem.tokenizer.decode(out_ids, skip_special_tokens=True),
            "info": f"Decoded ({how}) {verdict}, and {ending} ({time.perf_counter() - t:.2f} s). The decoder saw only "
                    f"the cache of the {gem.gem_config.k} special token{'s' if gem.gem_config.k > 1 else ''}.",
            "warnings": warnings}


# -- embed + generate tab ---------------------------------------------------------------------------
def embed_and_answer(session: Session, document: str, question: str, max_new_tokens: int = 32) -> dict:
    """One prefill of the document gives its GEM embedding and the answer; timed against two passes."""
    _, gem = session.models()
    document, question = check_text(document, "document"), check_text(question, "question")
    n = _new_tokens(max_new_tokens)
    readable = min(MAX_TEXT_TOKENS, gem.max_length - len(gem.bos) - gem.gem_config.k)  # what the prefill reads
    document, cut_doc = cut_to_tokens(gem, document, readable, "document")
    question, cut_q = cut_to_tokens(gem, question, MAX_QUESTION_TOKENS, "question")
    warnings = cut_doc + cut_q + [w for w in text_warnings(gem, document) + text_warnings(gem, question)
                                  if "only the first" not in w]
    t = time.perf_counter()
    emb, answer = gem.embed_and_generate(document, question, max_new_tokens=n)
    one = time.perf_counter() - t
    t = time.perf_counter()
    emb2 = gem.encode(document, pooling="gem")
    ids = gem.bos + gem.text_ids(document) + gem.text_ids(question)  # the ids embed_and_generate reads
    new = gem.generate_ids(torch.tensor([ids]), max_new_tokens=n)
    answer2 = gem.tokenizer.decode(new[0], skip_special_tokens=True)
    two = time.perf_counter() - t
    same = answer == answer2 and float(np.dot(emb, emb2)) > 0.999
    return {"answer": answer, "embedding": emb,
            "info": f"one prefill: **{one:.2f} s** · embed, then generate separately: **{two:.2f} s** "
                    f"(× {two / max(one, 1e-9):.2f}) · same answer and embedding: {'yes' if same else 'NO'}",
            "preview": ", ".join(f"{x:+.3f}" for x in emb[:8]) + f", … ({len(emb)} dims)",
            "warnings": warnings}

"""Exercise checks: each tells a learner whether they got it, and if not, what to look at.

    from lab.course import exercises as ex
    ex.check_two_specials(roles2)            # prints "✓ ..." or "✗ ... (hint)" and returns True/False

A check recomputes the truth from the lab itself (never a stored answer) and compares it with what
the learner built or measured. Solutions are in the notebooks (collapsed) and in docs/workshop.md.
"""

from __future__ import annotations

import torch

from ..gem.lm_loss import IGNORE_INDEX
from ..training.config_files import flat_items
from ..gem.masks import Role, gem_mask, gist_mask
from .build import (check_gem_mask, check_info_nce, check_labels, check_neighbour_agreement,  # noqa: F401 (the learner's `ex.`)
                    check_patch_s, check_readout)
from .measured import Seconds, check_one_prefill_faster, check_sampled, distinct_bigrams, sampled, timed  # noqa: F401
from .verdict import answered, verdict


def check_two_specials(roles: torch.Tensor) -> bool:
    """1.1 — roles (1, T) ending in two SPECIAL tokens with no suffix; each S must see the prefix
    and itself only."""
    if not answered(roles):
        return False
    r = roles[0].tolist()
    if r[-2:] != [Role.SPECIAL, Role.SPECIAL] or Role.SUFFIX in r:
        return verdict(False, "", "end the row with two Role.SPECIAL tokens and leave out the suffix")
    m = gem_mask(roles)[0, 0]
    T = len(r)
    sees = [set(torch.nonzero(m[i]).flatten().tolist()) for i in (T - 2, T - 1)]
    prefix = {i for i, x in enumerate(r) if x in (Role.BOS, Role.PREFIX)}
    ok = sees == [prefix | {T - 2}, prefix | {T - 1}]
    return verdict(ok, f"each S sees the {len(prefix)} prefix tokens and itself, not the other S: two "
                        f"independent summaries of the same text", "print describe(gem_mask(roles)[0]) and "
                    "read the two S rows")


def check_bos_cells(roles: torch.Tensor, changed_cells: int) -> bool:
    """1.2 — how many cells does suffix_sees_bos=True open?"""
    if not answered(roles, changed_cells):
        return False
    truth = int((gem_mask(roles, suffix_sees_bos=True) != gem_mask(roles)).sum())
    n_suffix = int((roles == Role.SUFFIX).sum())
    return verdict(changed_cells == truth, f"{truth} cells: each of the {n_suffix} suffix tokens may now "
                    f"also see BOS (a content-free attention sink), nothing else changes",
                    "count (gem_mask(roles, suffix_sees_bos=True) != gem_mask(roles)).sum()")


START_1_3 = "gem_mask(roles, suffix_sees_bos=gem_model.suffix_sees_bos).clone()"


def check_leak_detected(report: dict) -> bool:
    """1.3 — the leak check run with a broken mask (the suffix may see a prefix token), built from
    the model's own mask: a mask that only hides the sink also changes the suffix's logits, but that
    is not a leak, and it does not count."""
    if not answered(report):
        return False
    if "suffix_sees_prefix" not in report:
        return verdict(False, "", f"pass mask_fn=broken to leak_check (start from {START_1_3})")
    if report["closed"]:
        return verdict(False, "", f"your mask also hides {report['closed']} cell(s) the model's own mask "
                        f"allows (the sink, if the model has one); start from {START_1_3}")
    diff = report["max_diff_from_s_cache"]
    return verdict(report["suffix_sees_prefix"] > 0 and diff > 1e-3,
                    f"the check caught the leak: the suffix logits differ by {diff:.3g} from what the S "
                    f"cache alone gives", f"let SUFFIX rows see a PREFIX column (start from {START_1_3})")


def check_gist_extra_cells(k: int, extra_cells: int) -> bool:
    """1.4 — extra cells the gist mask allows over GEM's for k special tokens."""
    if not answered(k, extra_cells):
        return False
    roles = torch.tensor([[Role.BOS, Role.PREFIX, Role.PREFIX] + [Role.SPECIAL] * k + [Role.SUFFIX] * 2])
    truth = int((gist_mask(roles) != gem_mask(roles)).sum())
    return verdict(extra_cells == truth, f"{truth} = k(k-1)/2 cells: gist tokens see the earlier gist "
                    f"tokens, GEM's do not", "count (gist_mask(roles) != gem_mask(roles)).sum() on a row with "
                    f"k={k} specials")


def check_k_specials(batch: dict, k: int) -> bool:
    """2.1 — every special row of a collated batch carries exactly k special tokens per segment."""
    if not answered(batch, k):
        return False
    roles, ids = batch["roles"], batch["input_ids"]
    n = int((roles == Role.SPECIAL).sum())
    ok = n > 0 and n % k == 0 and len(set(ids[roles == Role.SPECIAL].tolist())) == k
    return verdict(ok, f"{n // k} special rows, each with the {k} distinct GEM tokens",
                    f"collate with a model from add_new_gem_tokens(..., k={k}) and p_plain=0")


def check_short_rows_skipped(stats) -> bool:
    """2.2 — a continuation row shorter than 2 * min_part tokens is skipped and counted."""
    if not answered(stats):
        return False
    return verdict(stats.skipped_short >= 1, f"skipped_short = {stats.skipped_short}: too short to split "
                    f"into prefix and suffix, so the collator drops it (never crashes)",
                    "use p_plain=0, reconstruction_share=0 and a text of 1-3 tokens")


def check_packing(unpacked: dict, packed: dict) -> bool:
    """2.3 — packing keeps every real token and target, with fewer positions."""
    if not answered(unpacked, packed):
        return False
    real = lambda b: int((b["roles"] != Role.PAD).sum())  # noqa: E731
    targets = lambda b: int((b["labels"] != IGNORE_INDEX).sum())  # noqa: E731
    ok = real(unpacked) == real(packed) and targets(unpacked) == targets(packed) \
        and packed["input_ids"].numel() < unpacked["input_ids"].numel()
    return verdict(ok, f"{real(packed)} real tokens either way; {unpacked['input_ids'].numel()} positions "
                    f"unpacked vs {packed['input_ids'].numel()} packed", "collate the same examples with "
                    "pack=False and pack=True (more than two rows)")


def check_literal_special_string(ids: list[int], special_ids: list[int], tokenizer, text: str) -> bool:
    """2.4 — the ids the lab reads for `text`, which contains the string "<|gem_0|>": they must read
    the whole text back and hold no GEM token (users cannot type S)."""
    if not answered(ids, special_ids):
        return False
    ids = [int(i) for i in ids]
    if set(ids) & set(special_ids):
        return verdict(False, "", "these ids hold a GEM token: tokenize with gem.text_ids(text), the lab's one "
                        "way from text to ids (special-token parsing off)")
    read_back = tokenizer.decode(ids)
    if read_back.strip() != text.strip():
        return verdict(False, "", f"these ids read back as {read_back!r}, not the text: tokenize the whole text")
    return verdict(True, f"{len(ids)} ordinary ids read back as {read_back!r}: the string is plain text, "
                    "users cannot inject S", "")


def check_number(name: str, answer: float, truth: float, tolerance: float = 0.01) -> bool:
    """A measured number (e.g. a score read off a table) within `tolerance` of the lab's own value."""
    if not answered(name, answer, truth, tolerance):
        return False
    return verdict(abs(answer - truth) <= tolerance, f"{name} = {truth:.3g}",
                    f"{name}: you have {answer:.3g}; recompute it from the cell above")


def check_ablation_run(cfg, metrics: list[dict], changed: dict, reference: list[dict] | None = None) -> bool:
    """3.2 / 3.3 — a training run made with the asked-for settings (`changed`: {dotted key: value}), with in-training
    evals; prints its last losses and evals beside the reference run's, to interpret."""
    if not answered(cfg, metrics, changed):
        return False
    settings = flat_items(cfg)  # {"extensions.positive": ..., "objective.alpha_cl": ...}
    wrong = {k: settings.get(k) for k, v in changed.items() if settings.get(k) != v}
    evals = [r for r in metrics if "eval_lee50_spearman" in r]
    if wrong or not evals:
        return verdict(False, "", f"train with {changed} (you have {wrong})" if wrong else
                        "set run.eval_every so the run logs evals, and pass its rows (on_log gives them)")

    def last(rows, key):
        vals = [r[key] for r in rows if key in r]
        return f"{vals[-1]:.3f}" if vals else "–"
    keys = ("cl", "ntp", "eval_lee50_spearman", "eval_heldout_ppl")
    print("             " + "  ".join(f"{k:>20}" for k in keys))
    for name, rows in (("this run", metrics), ("reference", reference or [])):
        if rows:
            print(f"{name:<12} " + "  ".join(f"{last(rows, k):>20}" for k in keys))
    return verdict(True, f"a run with {changed}: compare its last values with the reference above",
                    "")


def check_resume(straight_dir, resumed_dir) -> bool:
    """3.4 — two run folders of the same config: one made straight through, one stopped and then
    resumed (its `resumes.json` says where); the resumed run logs the same losses at every step."""
    from pathlib import Path

    from ..storage import read_json, read_jsonl

    if not answered(straight_dir, resumed_dir):
        return False
    straight_dir, resumed_dir = Path(straight_dir), Path(resumed_dir)
    if straight_dir.resolve() == resumed_dir.resolve():
        return verdict(False, "", "pass two folders: the straight run's and the stopped-and-resumed run's")
    resumes = read_json(resumed_dir / "resumes.json") if (resumed_dir / "resumes.json").is_file() else []
    if not resumes:
        return verdict(False, "", f"{resumed_dir} was never resumed: stop it early (train(cfg, stop_after=N)), "
                        "then train(cfg, resume=True)")
    a = {r["step"]: r["loss"] for r in read_jsonl(straight_dir / "metrics.jsonl")}
    b = {r["step"]: r["loss"] for r in read_jsonl(resumed_dir / "metrics.jsonl")}
    after = [s for s in sorted(set(a) & set(b)) if s > resumes[0]["step"]]
    ok = bool(after) and all(abs(a[s] - b[s]) <= 1e-5 * max(1.0, abs(a[s])) for s in sorted(set(a) & set(b)))
    return verdict(ok, f"resumed at step {resumes[0]['step']}; identical losses at all {len(set(a) & set(b))} "
                    f"logged steps, {len(after)} of them after the resume: it continued exactly",
                    "the two runs must share the config (but not the output folder) and log steps after the resume")


def check_map_neighbourhoods(coords_small, coords_large, embeddings, labels: list, closer) -> bool:
    """4.3 — which UMAP map (n_neighbors small or large) keeps the embedding's topic neighbourhoods
    better? `closer` is "small" or "large"; the check measures the neighbour agreement of both maps
    and of the embeddings themselves (which UMAP does not touch)."""
    from ..evaluation.quick import neighbour_agreement

    if not answered(coords_small, coords_large, embeddings, labels, closer):
        return False
    truth = {"small": neighbour_agreement(coords_small, labels), "large": neighbour_agreement(coords_large, labels)}
    full = neighbour_agreement(embeddings, labels)
    best = min(truth, key=lambda k: abs(truth[k] - full))
    summary = (f"agreement: embeddings {full:.3f}, map with small n_neighbors {truth['small']:.3f}, "
               f"large {truth['large']:.3f}")
    return verdict(closer == best, f"{summary}; the {best} one is closer",
                    f"{summary}: which map's value is nearer the embeddings'? (answer 'small' or 'large')")


def check_out_of_domain_change(change_pct: float, base, gem, n_texts: int = 50) -> bool:
    """5.2 — GEM's perplexity change (%) on BBC News (out of domain), against the base model, on
    `n_texts` articles cut to 128 tokens: `text_perplexity(model, news_texts(n_texts), max_tokens=128)`."""
    from ..corpora.eval_sets import news_texts
    from ..evaluation.quick import text_perplexity

    if not answered(change_pct, base, gem):
        return False
    texts = news_texts(n_texts)
    b, g = text_perplexity(base, texts, max_tokens=128), text_perplexity(gem, texts, max_tokens=128)
    truth = 100 * (g / b - 1)
    return verdict(abs(change_pct - truth) <= 0.1, f"news perplexity {b:.2f} -> {g:.2f} ({truth:+.1f} %): "
                    "compare it with the in-domain change in the table",
                    f"you have {change_pct:+.1f} %; compute 100 * (gem / base - 1) from both models' news perplexity")


def check_paired_stderr(paired_se: float, unpaired_se: float, base_mmlu: dict, gem_mmlu: dict) -> bool:
    """5.3 — the standard error of the MMLU difference, paired (per-question differences) and
    unpaired (sqrt(p_a(1-p_a)/n + p_b(1-p_b)/n)), both on the questions the two results share."""
    from ..evaluation.mmlu import paired_difference

    if not answered(paired_se, unpaired_se, base_mmlu, gem_mmlu):
        return False
    paired = paired_difference(base_mmlu, gem_mmlu, "acc")
    if paired is None:
        return verdict(False, "", "both results need per-question scores (results/mmlu-*.json or gem.json)")
    shared = base_mmlu["per_question"].keys() & gem_mmlu["per_question"].keys()
    n = len(shared)
    pa = sum(base_mmlu["per_question"][k][0] for k in shared) / n
    pb = sum(gem_mmlu["per_question"][k][0] for k in shared) / n
    unpaired = (pa * (1 - pa) / n + pb * (1 - pb) / n) ** 0.5
    ok = abs(paired_se - paired["stderr"]) <= 1e-3 and abs(unpaired_se - unpaired) <= 1e-3
    return verdict(ok, f"paired {100 * paired['stderr']:.1f} vs unpaired {100 * unpaired:.1f} points on {n} "
                    "questions: shared right and wrong answers cancel in the pairs",
                    ("paired is right; " if abs(paired_se - paired["stderr"]) <= 1e-3 else
                     "paired: the standard deviation of the per-question differences (ddof=1) over sqrt(n); ") +
                    ("unpaired is right" if abs(unpaired_se - unpaired) <= 1e-3 else
                     "unpaired: sqrt(pa(1-pa)/n + pb(1-pb)/n) with each model's accuracy on the shared questions"))


def check_biggest_gain(task: str, rows: list[dict], pooling: str = "mean") -> bool:
    """5.4 — the task where GEM gains most over the base model's `pooling`, from report rows
    (`lab.evaluation.report.table_rows`); `task` may be the long or the short name."""
    from ..evaluation.tasks import SHORT_NAMES

    if not answered(task, rows):
        return False
    gem = next((r for r in rows if r["pooling"] == "gem"), None)
    base = next((r for r in rows if r["pooling"] == pooling), None)
    if gem is None or base is None:
        return verdict(False, "", f"the rows need a gem row and a base row with pooling {pooling!r}")
    gains = {t: gem["tasks"][t] - base["tasks"][t] for t in gem["tasks"] if t in base["tasks"]}
    best = max(gains, key=gains.get)
    ok = task in (best, SHORT_NAMES.get(best))
    listing = ", ".join(f"{SHORT_NAMES.get(t, t)} {100 * g:+.1f}" for t, g in sorted(gains.items(), key=lambda kv: -kv[1]))
    return verdict(ok, f"{SHORT_NAMES.get(best, best)} ({listing})", f"compare GEM with {pooling} task by task")


def check_trails_encoder(tasks, rows: list[dict]) -> bool:
    """5.1 — the tasks (short or long names) where GEM scores below the dedicated encoder's row
    (all-MiniLM-L6-v2), at the table's precision (0.1 points)."""
    from ..evaluation.tasks import SHORT_NAMES

    if not answered(tasks, rows):
        return False
    gem = next((r for r in rows if r["pooling"] == "gem"), None)
    enc = next((r for r in rows if r["pooling"] == "encoder"), None)
    if gem is None or enc is None:
        return verdict(False, "", "the table needs a GEM row and an encoder (MiniLM) row")
    gaps = {t: round(100 * gem["tasks"][t], 1) - round(100 * enc["tasks"][t], 1) for t in gem["tasks"] if t in enc["tasks"]}
    truth = {t for t, g in gaps.items() if g < 0}
    long = {t: t for t in gaps} | {SHORT_NAMES.get(t, t): t for t in gaps}
    named = {long.get(t) for t in ([tasks] if isinstance(tasks, str) else tasks)}
    if None in named:
        return verdict(False, "", f"name tasks as in the table's header: {', '.join(SHORT_NAMES.get(t, t) for t in gaps)}")
    listing = ", ".join(f"{SHORT_NAMES.get(t, t)} {g:+.1f}" for t, g in sorted(gaps.items(), key=lambda kv: kv[1]))
    return verdict(named == truth, f"GEM minus MiniLM, points: {listing}",
                    f"{len(named - truth)} of yours GEM does not trail, {len(truth - named)} missing: compare the GEM "
                    "and all-MiniLM-L6-v2 rows column by column")

"""The attention-sink option (`sink_token`), similarity distillation, and the ablation study's configs
and table."""

import math

import pytest
import torch

from tests.conftest import flat_config
from lab.gem import GemModel
from lab.gem.config import GemConfig
from lab.gem.masks import Role
from lab.gem.tokens import add_gem_tokens
from lab.weights.tiny import build_tiny
from lab.training.collate import GemCollator
from lab.training.config import TrainConfig
from lab.training.config_files import config_diff, config_from_args
from lab.training.losses import LogitScale, similarity_distillation
from lab.gem.masks import gem_mask
from lab.training.terms import SimilarityDistillation
from lab.training.objective import GemObjective
from lab.training.setup import prepare_model
from .conftest import fake_teacher

TEXTS = ["the first training text", "second one here, a bit longer", "third text", "fourth text about cats",
         "fifth about stocks", "a sixth one", "seven", "eight is last"]


def _cfg(tmp_path, **kw) -> TrainConfig:
    base = dict(model="tiny-qwen2", batch_size=8, max_length=48, p_plain=0.0, positive="dropout",
                output_dir=str(tmp_path), precision="fp32")
    return flat_config(**{**base, **kw})


def test_sink_token_starts_every_row_and_the_suffix_sees_it(tmp_path):
    plain = prepare_model(_cfg(tmp_path), torch.device("cpu"))
    assert plain.bos == [] and not plain.suffix_sees_bos, "tiny-qwen2, like SmolLM2, adds no BOS"
    gem = prepare_model(_cfg(tmp_path, sink_token="<s>"), torch.device("cpu"))
    sink = gem.tokenizer.convert_tokens_to_ids("<s>")
    assert gem.bos == [sink] and gem.suffix_sees_bos and gem.gem_config.sink_token == "<s>"
    cfg = _cfg(tmp_path, sink_token="<s>", pack=False)
    batch = GemCollator(gem.tokenizer, gem.special_ids, gem.bos, cfg)([{"text": t, "index": i} for i, t in enumerate(TEXTS)])
    assert (batch["input_ids"][:, 0] == sink).all() and (batch["roles"][:, 0] == Role.BOS).all()
    suffix = batch["roles"] == Role.SUFFIX
    mask = gem_mask(batch["roles"], batch.get("segment_ids"), cfg.gem.suffix_attends_bos)[:, 0]
    assert suffix.any() and mask[:, :, 0][suffix].all(), "every suffix token may attend to the sink"
    prefix_cols = (batch["roles"] == Role.PREFIX)
    assert not (mask & suffix[:, :, None] & prefix_cols[:, None, :]).any(), "the prefix stays hidden"
    for view in ("query", "positive"):  # packed views: one sink in front of every view row
        assert int((batch[view]["input_ids"] == sink).sum()) == len(batch[view]["s_index"])
        assert (batch[view]["input_ids"][:, 0] == sink).all()


def test_sink_token_survives_a_checkpoint_and_encodes_with_it(tmp_path):
    from lab.weights.checkpoints import load_checkpoint, save_checkpoint

    model, tok = build_tiny("qwen2")
    add_gem_tokens(model, tok, 1)
    gem = GemModel(model, tok, GemConfig(k=1, trained=True, sink_token="<s>", base_model="tiny-qwen2"))
    save_checkpoint(gem, tmp_path / "ckpt")
    loaded = load_checkpoint(tmp_path / "ckpt")
    assert loaded.bos == gem.bos and loaded.suffix_sees_bos
    plan = loaded.plan_rows(["a text"], "gem")[0]
    assert plan.row.input_ids[0] == tok.convert_tokens_to_ids("<s>")
    torch.testing.assert_close(torch.as_tensor(loaded.encode(["a text"])), torch.as_tensor(gem.encode(["a text"])))


def test_an_unknown_sink_token_is_a_clear_error():
    model, tok = build_tiny("qwen2")
    add_gem_tokens(model, tok, 1)
    with pytest.raises(ValueError, match="sink_token '<bos>' is not a token"):
        GemModel(model, tok, GemConfig(k=1, sink_token="<bos>"))


def test_perplexity_scores_the_same_tokens_with_and_without_a_sink():
    from lab.evaluation.quick import text_perplexity

    model, tok = build_tiny("qwen2")
    add_gem_tokens(model, tok, 1)
    gem = GemModel(model, tok, GemConfig(k=1, sink_token="<s>"))
    texts = ["hello there", "a second, longer text"]
    by_hand_total, by_hand_count = 0.0, 0
    with torch.no_grad():
        for t in texts:
            ids = gem.bos + gem.text_ids(t)
            logits = model(input_ids=torch.tensor([ids])).logits[0]
            # targets: every text token but the first (which no model without BOS can be scored on)
            for pos in range(2, len(ids)):
                by_hand_total -= float(torch.log_softmax(logits[pos - 1], -1)[ids[pos]])
                by_hand_count += 1
    assert text_perplexity(gem, texts) == pytest.approx(math.exp(by_hand_total / by_hand_count), rel=1e-5)


def test_similarity_distillation_is_zero_at_the_teacher_and_pulls_towards_it():
    torch.manual_seed(0)
    teacher = torch.randn(12, 5)
    assert float(similarity_distillation(teacher, teacher, 20.0)) == pytest.approx(0, abs=1e-6)
    student = torch.randn(12, 8, requires_grad=True)
    loss = similarity_distillation(student, teacher, 20.0)
    assert float(loss.detach()) > 0.1
    loss.backward()
    with torch.no_grad():
        moved = student - 0.05 * student.grad / student.grad.norm()
    assert float(similarity_distillation(moved, teacher, 20.0)) < float(loss.detach()), "a gradient step helps"
    # a view is never its own candidate: a student that only matches itself gains nothing
    assert torch.isfinite(loss)


def test_similarity_distillation_over_some_rows_averages_those_rows():
    """What one process computes across processes (its own rows, everyone's views as candidates)
    averages to the single-process loss."""
    torch.manual_seed(1)
    student, teacher = torch.randn(8, 6), torch.randn(8, 4)
    whole = similarity_distillation(student, teacher, 10.0)
    halves = [similarity_distillation(student, teacher, 10.0, rows=torch.tensor(r)) for r in ([0, 1, 4, 5], [2, 3, 6, 7])]
    assert float(sum(halves) / 2) == pytest.approx(float(whole), rel=1e-6)




def test_objective_adds_the_distillation_term_with_the_teacher_on_the_views_texts(tmp_path):
    cfg = _cfg(tmp_path, p_plain=0.5, distill_weight=1.0)
    gem = prepare_model(cfg, torch.device("cpu"))
    seen = []
    teacher = lambda texts: seen.append(list(texts)) or fake_teacher(texts)  # noqa: E731
    objective = GemObjective(gem.model, LogitScale(), terms=[SimilarityDistillation(1.0, teacher)])
    examples = [{"text": t, "index": i} for i, t in enumerate(TEXTS)]
    batch = GemCollator(gem.tokenizer, gem.special_ids, gem.bos, cfg)(examples)
    assert len(batch["query_texts"]) == len(batch["positive_texts"]) == len(TEXTS)
    out = objective(batch, alpha=0.5)
    assert seen == [batch["query_texts"], batch["positive_texts"]], "the teacher reads the views as cut, once"
    assert float(out["distill_similarity"]) > 0
    assert float(out["loss"]) == pytest.approx(
        0.5 * float(out["ntp"]) + 0.5 * (float(out["cl"]) + float(out["distill_similarity"])), rel=1e-5)
    out["backward"].backward()
    without = GemObjective(gem.model, LogitScale())(batch, alpha=0.5)
    assert "distill_similarity" not in without, "distill_weight 0: no distillation term"
    no_texts = {k: v for k, v in batch.items() if not k.endswith("_texts")}
    with pytest.raises(ValueError, match="needs the views' texts"):
        objective(no_texts, alpha=0.5)


def test_every_ablation_changes_something_at_the_reference_budget():
    from research.ablations import CONFIG_DIR, QUESTIONS, REFERENCE, ablation_configs

    configs = ablation_configs()
    assert next(iter(configs)) == REFERENCE
    assert set(QUESTIONS) == set(configs), "every committed ablation says which question its row answers"
    reference = config_from_args(str(CONFIG_DIR / f"{REFERENCE}.yaml"), [])
    outputs = set()
    for name, path in configs.items():
        cfg = config_from_args(str(path), [])
        changes = config_diff(cfg, reference)
        assert (name == REFERENCE) == (not changes), f"{name}: {changes}"
        assert (cfg.optim.steps, cfg.optim.batch_size, cfg.rows.max_length) == (reference.optim.steps, reference.optim.batch_size, reference.rows.max_length)
        outputs.add(cfg.run.output_dir)
    assert len(outputs) == len(configs), "each ablation trains into its own folder"
    assert list(ablation_configs(["sink", "k2"])) == ["sink", "k2"]
    with pytest.raises(ValueError, match="no ablation config named"):
        ablation_configs(["nope"])


def _result(name, avg, news, changes=None, exact8=0.25):
    return {"rows": [{"pooling": "gem", "tasks": {"LocalLee50STS": avg}, "embedding_avg": avg}],
            "perplexity": 50.0, "perplexity_ood": news,
            "reconstruction": {"exact": {"8": exact8}, "token_accuracy": {"16": 0.5}},
            "suffix_attention": {"special": 0.12}, "ablation": {"name": name, "changes": changes or {}, "train_s": 120.0, "steps": 16}}


def test_ablation_table_lists_base_poolings_then_each_run_with_its_change():
    from research.ablations import ablation_table

    base = {"rows": [{"pooling": "echo", "tasks": {"LocalLee50STS": 0.5}, "embedding_avg": 0.5}],
            "perplexity": 57.8, "perplexity_ood": 40.0}
    runs = [_result("sink", 0.6, 40.0, {"sink_token": "<|s|>"}), _result("zz-mine", 0.4, 41.0, {"k": 3}),
            _result("reference", 0.55, 42.0)]
    text = ablation_table(runs, base)
    lines = text.strip().splitlines()
    assert lines[2].startswith("| base · echo | the untrained model | no training | 50.0")
    assert "| reference | the GEM-only recipe, reduced | (the reduced recipe) | 55.0" in lines[3] and "42.00 (+5.0)" in lines[3]
    assert "| sink | attention sink (beyond the paper) | sink_token=<\\|s\\|> | 60.0" in lines[4], "pipes escaped"
    assert "40.00 (+0.0)" in lines[4] and lines[4].endswith("| 25 | 50 | 12.0 | 2.0 |")
    assert lines[5].startswith("| zz-mine |  | k=3 | 40.0"), "a row QUESTIONS does not name comes last, with no question"


def test_leak_check_and_the_s_cache_keep_the_sink():
    from lab.gem.leak import leak_check

    model, tok = build_tiny("qwen2")
    add_gem_tokens(model, tok, 2)
    gem = GemModel(model, tok, GemConfig(k=2, trained=True, sink_token="<s>"))
    report = leak_check(gem, "The tower is in Paris.", " It was built", other_prefix="A cat sat on a mat.")
    assert report["cached_entries"] == 3, "the two S entries and the sink: all the suffix saw in training"
    assert report["max_diff_from_s_cache"] < 1e-4, report
    assert report["max_change_other_prefix"] > 1e-3, "the suffix still reads the prefix, through S"
    assert len(gem.reconstruct_ids("a short text", max_new_tokens=4)) <= 4


def test_suffix_attention_shares_cover_everything_the_suffix_may_see():
    from lab.evaluation.language import suffix_attention
    from lab.storage import PROJECT_ROOT

    heldout = str(PROJECT_ROOT / "data/sample/wiki_heldout_sample.jsonl")
    for sink in (None, "<s>"):
        model, tok = build_tiny("qwen2")
        add_gem_tokens(model, tok, 1)
        shares = suffix_attention(GemModel(model, tok, GemConfig(k=1, trained=True, sink_token=sink)), heldout, n_texts=3)
        assert (shares["bos"] is None) == (sink is None)
        total = shares["special"] + (shares["bos"] or 0.0) + shares["suffix"]
        assert total == pytest.approx(1.0, abs=1e-4), shares  # the prefix gets nothing
        assert 0 < shares["special"] < 1


def test_report_only_rewrites_the_table_from_finished_rows(tmp_path, monkeypatch):
    import json

    from research import ablations

    results = tmp_path / "ablations"
    monkeypatch.setattr(ablations, "RESULTS", results)
    with pytest.raises(FileNotFoundError, match="run the ablations first"):
        ablations.run_ablations(report_only=True)
    results.mkdir()
    base = {"rows": [{"pooling": "mean", "tasks": {"LocalLee50STS": 0.5}, "embedding_avg": 0.5}],
            "perplexity": 50.0, "perplexity_ood": 40.0}
    (results / "base.json").write_text(json.dumps(base))
    (results / "sink.json").write_text(json.dumps(_result("sink", 0.6, 40.0, {"sink_token": "<s>"})))
    (results / "reference.json").write_text(json.dumps(_result("reference", 0.55, 42.0)))
    (results / "sink.partial.json").write_text("{}")  # an unfinished row is left out
    md = ablations.run_ablations(report_only=True)
    assert md == tmp_path / "ablations.md" and (tmp_path / "ablations.html").is_file()
    rows = [line.split(" | ")[0] for line in md.read_text().splitlines() if line.startswith("| ")]
    assert rows[1:] == ["| base · mean", "| reference", "| sink"]


def test_an_interrupted_ablation_run_is_not_evaluated(tmp_path, monkeypatch):
    from research import ablations

    cfg = flat_config(output_dir=str(tmp_path / "run"), steps=16, ntp_steps=6)
    monkeypatch.setattr(ablations, "train", lambda cfg, resume: tmp_path / "run" / "checkpoint-7")  # stopped early
    with pytest.raises(KeyboardInterrupt, match="stopped at checkpoint-7 of 16 steps"):
        ablations.trained_checkpoint(cfg)
    assert not (tmp_path / "run" / "train_wall_s.json").exists()
    monkeypatch.setattr(ablations, "train", lambda cfg, resume: tmp_path / "run" / "checkpoint-16")
    ckpt, seconds = ablations.trained_checkpoint(cfg)
    assert ckpt.name == "checkpoint-16" and seconds >= 0 and (tmp_path / "run" / "train_wall_s.json").is_file()


def test_ablation_figure_labels_each_run_by_name():
    from lab.viz.figures import ablation_figure

    base = {"rows": [{"pooling": "echo", "tasks": {}, "embedding_avg": 0.5}], "perplexity_ood": 40.0}
    fig = ablation_figure([_result("reference", 0.55, 42.0), _result("sink", 0.6, 40.0)], base)
    assert tuple(fig.data[0].text) == ("reference", "sink") and fig.data[0].mode == "markers+text"
    assert tuple(fig.data[1].text) == ("base · echo",)


def test_mmlu_harness_reads_the_sink_in_front_and_splits_context_from_answer():
    from lab.evaluation.mmlu import harness_lm

    model, tok = build_tiny("qwen2")
    add_gem_tokens(model, tok, 1)
    sink = tok.convert_tokens_to_ids("<s>")
    with_sink = harness_lm(GemModel(model, tok, GemConfig(k=1, trained=True, sink_token="<s>")))
    without = harness_lm(GemModel(model, tok, GemConfig(k=1, trained=True)))
    text = "Question: the cat sat\nAnswer:"
    assert with_sink.tok_encode(text) == [sink] + without.tok_encode(text)
    assert sink not in without.tok_encode(text)
    context, answer = with_sink._encode_pair(text, " B")
    assert context[0] == sink and sink not in answer
    assert answer == without._encode_pair(text, " B")[1], "the scored answer tokens are the same"


def test_a_run_without_a_contrastive_phase_loads_no_teacher_and_builds_no_distillation(tmp_path, monkeypatch):
    """Distillation and the head fit act only on the contrastive phase's views: with ntp_steps = steps
    (the stop stage's config) they never would, so the teacher is not loaded."""
    import lab.weights.encoders as encoders
    from lab.training.setup import extension_terms

    loaded = []
    monkeypatch.setattr(encoders, "load_encoder", lambda name, device=None: loaded.append(name) or _FakeEncoder())
    settings = dict(distill_weight=1.0, distill_embedding_weight=1.0, head_init="ridge", steps=6, readout_head=True,
                    readout_dim=384)
    teacher, terms = extension_terms(_cfg(tmp_path, ntp_steps=6, **settings), torch.device("cpu"))
    assert teacher is None and terms == [] and loaded == []
    teacher, terms = extension_terms(_cfg(tmp_path, ntp_steps=5, **settings), torch.device("cpu"))
    assert teacher is not None and len(loaded) == 1
    assert [t.name for t in terms] == ["distill_similarity", "distill_embedding"]
    teacher, terms = extension_terms(_cfg(tmp_path, ntp_steps=6, head_refit=True, **settings), torch.device("cpu"))
    assert teacher is not None and terms == [] and len(loaded) == 2, "head_refit fits the head at the last step"


def test_the_ridge_head_is_fitted_where_the_recipe_says():
    from lab.training.head_init import head_fit_steps

    ridge = dict(head_init="ridge", steps=10, readout_head=True, readout_dim=384)
    assert head_fit_steps(flat_config(model="tiny-llama", ntp_steps=4, **ridge)) == (4,)
    assert head_fit_steps(flat_config(model="tiny-llama", ntp_steps=4, head_refit=True, **ridge)) == (4, 9)
    assert head_fit_steps(flat_config(model="tiny-llama", ntp_steps=10, head_refit=True, **ridge)) == (9,)
    assert head_fit_steps(flat_config(model="tiny-llama", ntp_steps=10, **ridge)) == ()
    assert head_fit_steps(flat_config(model="tiny-llama", ntp_steps=4, steps=10)) == ()


class _FakeEncoder:
    def encode(self, texts, **kw):
        return fake_teacher(list(texts))

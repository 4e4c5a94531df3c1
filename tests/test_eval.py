"""Evaluation: the built data, metric sanity on toy tasks, the whole suite on a tiny model."""

import dataclasses
import hashlib
import json
import os

import numpy as np
import pytest

from lab.cli import main as cli_main
from lab.corpora.eval_sets import build_eval_data, evaluation_texts, read_eval
from lab.corpora.wiki import build_corpus, shingles
from lab.evaluation.embedders import Embedder
from lab.gem import GemConfig
from lab.evaluation.report import (load_results, markdown_table, reconstruction_table, table_rows, task_bars,
                                   tradeoff_scatter, write_report)
from lab.evaluation.suite import Suite, run_suite, save_result
from lab.evaluation.tasks import TASK_NAMES, TaskSizes, build_tasks, run_tasks
from lab.weights.checkpoints import save_checkpoint
from lab.storage import read_jsonl
from lab.storage.atomic import atomic_dir

from .conftest import shipped_like_gem, tiny_gem
from .test_train import ROOT

HELDOUT = str(ROOT / "data/sample/wiki_heldout_sample.jsonl")


@pytest.fixture(scope="module")
def eval_dir():
    return build_eval_data()  # idempotent: reuses data/build/eval when complete


def test_eval_data(eval_dir):
    bbc = read_eval("bbc.jsonl")
    assert len(bbc) == 2225 and {r["label"] for r in bbc} == {"business", "entertainment", "politics", "sports", "tech"}
    assert all(r["title"] and r["text"] and r["title"] not in r["text"][:20] for r in bbc[:50])
    pairs = read_eval("bbc_pairs.jsonl")
    assert sum(p["labels"] for p in pairs) == len(pairs) // 2
    topic = {r["title"]: r["label"] for r in bbc}
    lead_topic = {" ".join(r["text"].split()[:60]): r["label"] for r in bbc}
    assert all(topic[p["sentence1"]] == lead_topic[p["sentence2"]] for p in pairs), "negatives share the topic"
    mmlu = read_eval("mmlu.jsonl")
    assert len(mmlu) == 14042 and len({r["topic"] for r in mmlu[:100]}) > 30, "shuffled, not grouped by topic"
    assert {r["correct_answer"] for r in mmlu} == {"A", "B", "C", "D"}, "no stray header rows"
    lee = read_eval("lee_sts.jsonl")
    assert len(lee) == 1225 and all(0 <= r["score"] <= 1 for r in lee)


def test_training_corpus_is_disjoint_from_every_evaluation_text(eval_dir):
    """No 8-word run of any training or held-out row occurs in any evaluation text (Lee-50, BBC, MMLU)."""
    corpus = build_corpus()  # idempotent
    evaluation = set().union(*(shingles(t) for t in evaluation_texts()))
    assert len(evaluation) > 500_000
    rows = read_jsonl(corpus / "train.jsonl") + read_jsonl(corpus / "heldout.jsonl")
    shared = [r["text"] for r in rows if shingles(r["text"]) & evaluation]
    assert not shared, f"{len(shared)} training rows overlap evaluation text, e.g. {shared[:2]}"
    assert len(rows) >= 32_000


def _toy_rows(n: int = 20) -> dict:
    """Five tiny tasks over texts 'item i'; an oracle can solve all of them exactly."""
    labels = [f"topic{i % 4}" for i in range(n)]
    return {
        "LocalLee50STS": [{"sentence1": f"item {i}", "sentence2": f"item {i + 1}", "score": float(i % 5) / 4}
                          for i in range(n)],
        "LocalBBCClassification": ([{"text": f"item {i}", "label": labels[i]} for i in range(n)],
                                   [{"text": f"item {i}", "label": labels[i]} for i in range(n)]),
        "LocalBBCClustering": ([f"item {i}" for i in range(n)], labels),
        "LocalBBCRetrieval": ([{"id": f"q{i}", "text": f"query {i}"} for i in range(n)],
                              [{"id": f"d{i}", "text": f"item {i}", "title": ""} for i in range(n)],
                              {f"q{i}": {f"d{i}": 1} for i in range(n)}),
        "LocalBBCPairs": [{"sentence1": f"query {i}", "sentence2": f"item {i if i % 2 else (i + 3) % n}",
                           "labels": i % 2} for i in range(n)],
    }


def _oracle(n: int = 20):
    """Embeds 'item i' / 'query i' so that every toy task is solved exactly."""
    def embed(texts):
        out = []
        for t in texts:
            i = int(t.split()[1])
            v = np.zeros(2 * n + 8)
            v[i] = 1.0  # identity: query i == item i (retrieval, pairs)
            v[n + i % 4] = 3.0  # topic (classification, clustering)
            out.append(v)
        return np.stack(out)
    return embed


def _random(texts):
    return np.stack([np.random.default_rng(int(hashlib.sha256(t.encode()).hexdigest()[:8], 16)).normal(size=32)
                     for t in texts])


def test_metric_sanity_perfect_and_random_encoders():
    sizes = TaskSizes(samples_per_label=2, n_experiments=2)
    rows = _toy_rows()
    perfect = run_tasks(Embedder("oracle", "x", _oracle()), build_tasks(sizes, rows))
    assert perfect["LocalBBCRetrieval"] == pytest.approx(1.0)
    assert perfect["LocalBBCPairs"] == pytest.approx(1.0)
    assert perfect["LocalBBCClassification"] == pytest.approx(1.0)
    assert perfect["LocalBBCClustering"] == pytest.approx(1.0)
    random = run_tasks(Embedder("random", "x", _random), build_tasks(sizes, rows))
    assert random["LocalBBCRetrieval"] < 0.5, "random retrieval of 1 in 20 is near chance (nDCG@10 ~0.15)"
    assert random["LocalBBCClustering"] < 0.5


def _blobs(texts):
    """Four noisy blobs by the label in 'item i' (i % 4): k-means draws disagree on them."""
    return np.stack([np.eye(8)[int(t.split()[1]) % 4] + 0.9 * np.random.default_rng(
        int(hashlib.sha256(t.encode()).hexdigest()[:8], 16)).standard_normal(8) for t in texts])


def test_clustering_scores_the_mean_of_kmeans_draws_and_one_draw_is_mtebs_own(eval_dir):
    from mteb.abstasks.clustering_legacy import AbsTaskClusteringLegacy

    from lab.evaluation.tasks import kmeans_v_measures

    rows = _toy_rows(80)
    sentences, labels = rows["LocalBBCClustering"]
    embedder = Embedder("blobs", "x", _blobs)
    draws = kmeans_v_measures(embedder.embed(sentences), labels, range(7))
    assert len({round(d, 9) for d in draws}) > 1, "the draws must differ, or the mean tests nothing"
    sizes = TaskSizes(kmeans_draws=7)
    (task,) = build_tasks(sizes, rows, ("LocalBBCClustering",))
    assert task.kmeans_seeds == tuple(range(7))
    assert run_tasks(embedder, [task])["LocalBBCClustering"] == pytest.approx(np.mean(draws), abs=1e-12)

    from lab.evaluation.tasks import LOCAL_CLUSTERING_TASKS, LOCAL_TASK_NAMES, _MeanOfDraws, task_rows

    every = build_tasks(sizes, {**task_rows(sizes), **rows}, LOCAL_TASK_NAMES)
    assert {t.metadata.name for t in every if isinstance(t, _MeanOfDraws)} == set(LOCAL_CLUSTERING_TASKS)

    (one,) = build_tasks(sizes, rows, ("LocalBBCClustering",))
    one.kmeans_seeds = (42,)
    plain = type("PlainClustering", (AbsTaskClusteringLegacy,), {"metadata": one.metadata, "load_data": type(one).load_data})
    mtebs = plain()
    mtebs.rows = one.rows
    assert run_tasks(embedder, [one])["LocalBBCClustering"] == pytest.approx(
        run_tasks(embedder, [mtebs])["LocalBBCClustering"], abs=1e-12)


def test_embedder_memoises_and_normalises():
    calls = []

    def fn(texts):
        calls.append(list(texts))
        return np.ones((len(texts), 3))

    e = Embedder("m", "x", fn)
    a = e.embed(["a", "b", "a"])
    b = e.embed(["b", "c"])
    assert calls == [["a", "b"], ["c"]] and e.texts_embedded == 3
    assert np.allclose(np.linalg.norm(a, axis=1), 1) and np.allclose(a[1], b[0])


def _tiny_eval_dir(tmp_path):
    """An evaluation-data folder with a few rows of each file, in the built layout."""
    bbc = [{"id": f"t/{i}", "label": f"l{i % 3}", "title": f"headline number {i}",
            "text": f"body text of article {i} about topic {i % 3}. " * 3} for i in range(24)]
    mmlu = [{"question": f"What is {i} + {i}?", "answer_a": str(2 * i), "answer_b": str(i), "answer_c": "0",
             "answer_d": "1", "correct_answer": "A", "topic": ["math", "logic"][i % 2]} for i in range(8)]
    files = {
        "lee_sts.jsonl": [{"sentence1": f"doc {i}", "sentence2": f"doc {i + 2}", "score": (i % 3) / 2} for i in range(12)],
        "bbc.jsonl": bbc,
        "bbc_pairs.jsonl": [{"sentence1": r["title"], "sentence2": r["text"][:40], "labels": 1} for r in bbc[:6]]
        + [{"sentence1": r["title"], "sentence2": bbc[0]["text"][:30], "labels": 0} for r in bbc[6:12]],
        "mmlu.jsonl": mmlu,
    }
    with atomic_dir(tmp_path / "eval") as tmp:
        for name, rows in files.items():
            (tmp / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path / "eval"


TINY = Suite("tiny", TaskSizes(classification_train=12, samples_per_label=2, n_experiments=1), max_length=48,
             mmlu_limit=4, mmlu_fewshot=1, perplexity_rows=6, reconstruction_lengths=(4, 8),
             reconstruction_per_length=2)


@pytest.fixture(scope="module", params=["tiny", "shipped-like"])
def tiny_checkpoint(request, tmp_path_factory):
    """A tiny GEM checkpoint (tiny-llama, k = 1) and one configured like the shipped model."""
    gem = tiny_gem("llama", k=1, max_length=64) if request.param == "tiny" else shipped_like_gem(max_length=64)
    return save_checkpoint(gem, tmp_path_factory.mktemp("ckpt") / "tiny-gem")


def test_suite_runs_every_part_and_is_deterministic(tmp_path, tiny_checkpoint):
    data = _tiny_eval_dir(tmp_path)
    a = run_suite(str(tiny_checkpoint), ["gem", "mean"], TINY, data_dir=data, heldout=HELDOUT, label="tiny")
    assert [r["pooling"] for r in a["rows"]] == ["gem", "mean"]
    assert set(a["rows"][0]["tasks"]) == set(TASK_NAMES)
    assert all(np.isfinite(v) for r in a["rows"] for v in r["tasks"].values())
    assert a["mmlu"]["n"] == 4 and 0 <= a["mmlu"]["acc"] <= 1 and a["mmlu"]["num_fewshot"] == 1
    per_q = a["mmlu"]["per_question"]
    assert len(per_q) == 4 and a["mmlu"]["acc"] == pytest.approx(np.mean([v[0] for v in per_q.values()]))
    assert a["mmlu"]["p_correct"] == pytest.approx(np.mean([v[1] for v in per_q.values()]))
    assert a["perplexity"] > 1 and set(a["reconstruction"]["exact"]) == {4, 8}
    assert a["provenance"]["packages"]["mteb"] and a["provenance"]["commit"] is not None
    assert {"load", "embedding:gem", "mmlu", "total"} <= set(a["timings_s"])
    b = run_suite(str(tiny_checkpoint), ["gem", "mean"], TINY, data_dir=data, heldout=HELDOUT, label="tiny")
    strip = lambda r: {k: v for k, v in r.items() if k not in ("timings_s", "provenance")}  # noqa: E731
    assert strip(a) == strip(b), "same seed, same numbers"

    out = save_result(a, tmp_path / "results" / "tiny.json")
    with pytest.raises(FileExistsError, match="--force"):
        save_result(a, out)
    md = write_report(load_results([out]), tmp_path / "results" / "report")
    text = md.read_text()
    assert "| tiny | gem |" in text and "Reconstruction" in text
    assert (tmp_path / "results" / "report_tradeoff.html").stat().st_size > 10_000


def test_language_side_in_a_chosen_dtype_and_its_reconstruction_cells(tmp_path, tiny_checkpoint):
    """skip=embedding+mmlu with dtype/device (how the GPU runs were checked): no rows, the dtype asked
    for, and the report's reconstruction cells read "exact / token accuracy" from the result."""
    data = _tiny_eval_dir(tmp_path)
    r = run_suite(str(tiny_checkpoint), None, TINY, data_dir=data, heldout=HELDOUT, skip=("embedding", "mmlu"),
                  device="cpu", dtype="bfloat16", label="x")
    assert r["rows"] == [] and r["provenance"]["dtype"] == "torch.bfloat16" and r["perplexity"] > 1
    for key in ("reconstruction", "reconstruction_news"):
        exact, stop, tok = (r[key][k] for k in ("exact", "exact_with_stop", "token_accuracy"))
        row = reconstruction_table([r], key).splitlines()[2]
        beams = r[key]["num_beams"]  # the model's own width (the shipped-like model's: the shipped 8)
        assert beams == GemConfig.load(tiny_checkpoint).reconstruct_beams
        assert row == f"| x{f' (beam {beams})' if beams > 1 else ''} | " + " | ".join(f"{100 * exact[n]:.0f} / {100 * stop[n]:.0f} / {100 * tok[n]:.1f}"
                                            for n in (4, 8)) + " |"
    assert r["reconstruction"]["count"] == r["reconstruction_news"]["count"] == {4: 2, 8: 2}


def test_cli_eval_sets_the_texts_per_reconstruction_length_the_lengths_and_the_beams(tmp_path, tiny_checkpoint, capsys):
    out = tmp_path / "r.json"
    assert cli_main(["eval", "--model", str(tiny_checkpoint), "--skip", "embedding,mmlu,perplexity,perplexity_ood",
                     "--reconstruction-per-length", "1", "--reconstruction-lengths", "4, 8", "--device", "cpu",
                     "--dtype", "float32", "--heldout", HELDOUT, "--reconstruction-beams", "2", "--label", "x",
                     "--output", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["reconstruction"]["count"] == result["reconstruction_news"]["count"] == {"4": 1, "8": 1}
    assert result["provenance"]["dtype"] == "torch.float32" and result["provenance"]["suite"]["reconstruction_lengths"] == [4, 8]
    assert result["reconstruction"]["num_beams"] == result["provenance"]["suite"]["reconstruction_beams"] == 2
    assert "| x (beam 2) |" in reconstruction_table([result]), "a beam-search result says so in the report"
    with pytest.raises(SystemExit):  # argparse's own error, naming the flag and the choices
        cli_main(["eval", "--model", str(tiny_checkpoint), "--reconstruction-beams", "0", "--output", str(tmp_path / "bad.json")])
    assert "--reconstruction-beams: invalid choice: 0" in capsys.readouterr().err and not (tmp_path / "bad.json").exists()
    for bad in ("8,sixteen", "0", ","):
        assert cli_main(["eval", "--model", str(tiny_checkpoint), "--reconstruction-lengths", bad,
                         "--output", str(tmp_path / "bad.json")]) == 2
        assert "--reconstruction-lengths" in capsys.readouterr().err and not (tmp_path / "bad.json").exists()


def test_base_model_has_no_gem_rows_or_reconstruction(tmp_path):
    data = _tiny_eval_dir(tmp_path)
    r = run_suite("tiny-llama", None, TINY, data_dir=data, heldout=HELDOUT, skip=("mmlu",))
    assert [x["pooling"] for x in r["rows"]] == ["mean"] and r["reconstruction"] is None and r["mmlu"] is None
    with pytest.raises(ValueError, match="pooling='gem' is undefined"):
        run_suite("tiny-llama", ["gem"], TINY, data_dir=data, heldout=HELDOUT, skip=("mmlu",))


def test_letter_probability_is_the_softmax_over_choices():
    from lab.evaluation.mmlu import letter_probability

    resps = [(np.log(0.1), False), (np.log(0.6), True), (np.log(0.2), False), (np.log(0.1), False)]
    assert letter_probability(resps, 1) == pytest.approx(0.6)
    assert letter_probability([[-1.0, False]] * 4, 3) == pytest.approx(0.25)


def test_paired_difference_cancels_shared_questions():
    from lab.evaluation.mmlu import paired_difference

    a = {"per_question": {str(i): [float(i % 2), 0.25] for i in range(100)}}
    same = paired_difference(a, a)
    assert same == {"diff": 0.0, "stderr": 0.0, "n": 100}, "identical answers: no difference, no noise"
    b = {"per_question": {**a["per_question"], "0": [1.0, 0.5], "2": [1.0, 0.5], "999": [1.0, 1.0]}}
    d = paired_difference(a, b)
    assert d["n"] == 100 and d["diff"] == pytest.approx(0.02)
    assert d["stderr"] == pytest.approx(np.std([1, 1] + [0] * 98, ddof=1) / 10)
    assert paired_difference(a, b, "p_correct")["diff"] == pytest.approx(0.005)
    assert paired_difference(a, {"acc": 0.3}) is None, "old results without per-question scores"


def test_language_cost_table_compares_each_model_against_its_own_base():
    from lab.evaluation.report import language_cost_table

    q = {str(i): [0.0, 0.25] for i in range(10)}
    base = {"label": "base", "mmlu": {"per_question": q}, "perplexity": 50.0}
    gem = {"label": "gem", "mmlu": {"per_question": {**q, "3": [1.0, 0.75]}}, "perplexity": 52.5}
    base["perplexity_ood"], gem["perplexity_ood"] = 40.0, 38.0
    enc = {"label": "enc", "mmlu": None, "perplexity": None}
    base_again = {**base, "mmlu": {"per_question": {"0": [1.0, 1.0]}}}
    table = language_cost_table([base, enc, gem, base_again])
    assert "| gem | base | 10 | +10.0 ± 10.0 | +5.0 ± 5.0 | +5.0 | -5.0 |" in table
    assert "\n| base |" not in table, "the base model is not compared with itself"
    assert language_cost_table([base, enc]) == ""
    # two families: each GEM model against the base of its own backbone (gem_config.base_model)
    fam = lambda label, model, backbone=None, ppl=50.0: {  # noqa: E731
        "label": label, "model": model, "mmlu": {"per_question": q}, "perplexity": ppl,
        "provenance": {"gem_config": {"base_model": backbone} if backbone else None}}
    table = language_cost_table([fam("S", "smollm2-135m"), fam("G", "gemma3-270m", ppl=20.0),
                                 fam("GEM-S", "gem-s", "smollm2-135m", 25.0), fam("GEM-G", "gem-g", "gemma3-270m", 30.0)])
    assert "| GEM-S | S | 10 | +0.0 ± 0.0 | +0.0 ± 0.0 | -50.0 | – |" in table
    assert "| GEM-G | G | 10 | +0.0 ± 0.0 | +0.0 ± 0.0 | +50.0 | – |" in table and "\n| G |" not in table
    only_g = language_cost_table([fam("G", "gemma3-270m", ppl=20.0), fam("GEM-G", "gem-g", "gemma3-270m", 30.0),
                                  fam("GEM-G", "gem-g", "gemma3-270m", 30.0), fam("GEM-S", "gem-s", "smollm2-135m", 25.0)])
    assert only_g.count("| GEM-G |") == 1 and "GEM-S" not in only_g, "no row against another family's base"


def test_a_language_only_result_gets_a_table_row_and_no_plot_point():
    res = {"label": "m", "suite": "quick", "rows": [], "mmlu": {"acc_macro": 0.3, "acc": 0.31}, "perplexity": 12.345}
    rows = table_rows([res])
    assert markdown_table(rows).splitlines()[2] == "| m | – | – | 30.0 | 12.35 | – |"
    assert len(tradeoff_scatter(rows).data) == 0 and len(task_bars(rows).data) == 0


def test_markdown_table_layout():
    res = [{"label": "m", "suite": "quick", "rows": [{"pooling": "mean", "tasks": {"LocalLee50STS": 0.5},
                                                      "embedding_avg": 0.5}], "mmlu": {"acc_macro": 0.3, "acc": 0.31},
            "perplexity": 12.345, "perplexity_ood": 20.0}]
    table = markdown_table(table_rows(res))
    assert table.splitlines()[0] == ("| model | pooling | Lee50 STS | emb. avg | MMLU | ppl (Wikipedia, in-domain) "
                                     "| ppl (news, out-of-domain) |")
    assert table.splitlines()[2] == "| m | mean | 50.0 | 50.0 | 30.0 | 12.35 | 20.00 |"


def test_cli_eval_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "r.json"
    out.write_text("{}")
    assert cli_main(["eval", "--model", "tiny-llama", "--output", str(out)]) == 2
    assert "--force" in capsys.readouterr().err and out.read_text() == "{}"


def test_update_remeasures_one_task_keeps_the_rest_and_refuses_another_model(tmp_path, tiny_checkpoint, eval_dir, capsys):
    """`--update --tasks`: a file measured before clustering averaged k-means draws (its score one
    draw, marked in the report) gets the clustering score again; the other tasks and parts stay."""
    out = tmp_path / "r.json"
    args = ["eval", "--model", str(tiny_checkpoint), "--suite", "smoke", "--skip", "mmlu,reconstruction,perplexity_ood",
            "--heldout", HELDOUT, "--dtype", "float32", "--output", str(out)]
    assert cli_main(args) == 0
    fresh = json.loads(out.read_text())
    old = json.loads(out.read_text())
    old["rows"][0]["tasks"]["LocalBBCClustering"] = 0.123
    old["rows"][0]["tasks"]["LocalLee50STS"] = 0.456  # not remeasured: must stay
    assert old["rows"][0]["kmeans_draws"] == {"LocalBBCClustering": 2}
    del old["provenance"]["suite"]["sizes"]["kmeans_draws"], old["provenance"]["weights"]  # as files made before
    del old["rows"][0]["kmeans_draws"]
    old["perplexity"] = 99.0
    out.write_text(json.dumps(old))
    assert "¹" in markdown_table(table_rows(load_results([out])))

    assert cli_main(args + ["--update", "--tasks", "LocalBBCClustering", "--skip", "mmlu,reconstruction,perplexity,perplexity_ood"]) == 0
    new = json.loads(out.read_text())
    tasks = new["rows"][0]["tasks"]
    assert tasks["LocalBBCClustering"] == pytest.approx(fresh["rows"][0]["tasks"]["LocalBBCClustering"], abs=1e-12)
    assert tasks["LocalLee50STS"] == 0.456 and new["perplexity"] == 99.0
    assert new["rows"][0]["embedding_avg"] == pytest.approx(sum(tasks.values()) / len(tasks))
    (update,) = new["provenance"]["updates"]
    assert update["tasks"] == ["LocalBBCClustering"] and update["parts"] == [] and update["suite"]["sizes"]["kmeans_draws"] == 2
    assert new["provenance"]["weights"] and "¹" not in markdown_table(table_rows(load_results([out])))
    assert new["rows"][0]["kmeans_draws"] == {"LocalBBCClustering": 2}
    language_only = {**old, "rows": [], "provenance": {}}  # a later file of the same model: its rows come from `out`
    (tmp_path / "mmlu.json").write_text(json.dumps(language_only))
    assert "¹" not in markdown_table(table_rows(load_results([tmp_path / "mmlu.json", out])))

    before = out.read_text()
    for bad, named in ((["--model", "tiny-llama"], "model"), (["--suite", "quick"], "suite"),
                       (["--tasks", "LocalBBCRetrievl"], "LocalBBCRetrievl")):
        assert cli_main(args + ["--update"] + bad) == 2
        assert named in capsys.readouterr().err and out.read_text() == before
    changed = json.loads(before)
    changed["provenance"]["weights"] = "another model's"
    out.write_text(json.dumps(changed))
    assert cli_main(args + ["--update", "--tasks", "LocalBBCClustering"]) == 2
    assert "weights fingerprint" in capsys.readouterr().err and json.loads(out.read_text()) == changed
    changed["provenance"].update(weights=json.loads(before)["provenance"]["weights"], dtype="torch.bfloat16")
    out.write_text(json.dumps(changed))
    assert cli_main(args + ["--update", "--tasks", "LocalBBCClustering"]) == 2
    assert "--dtype" in capsys.readouterr().err and json.loads(out.read_text()) == changed
    assert cli_main(args[:-1] + [str(tmp_path / "none.json"), "--update"]) == 2
    assert "no such result file" in capsys.readouterr().err


def test_an_interrupted_evaluation_resumes_from_its_partial_file(tmp_path, tiny_checkpoint, monkeypatch):
    """Parts finished before a crash are saved; the rerun reuses them and computes only the rest."""
    import lab.evaluation.mmlu as mmlu_module
    import lab.evaluation.suite as suite_module

    data = _tiny_eval_dir(tmp_path)
    partial = tmp_path / "r.json.partial"
    real_mmlu = mmlu_module.mmlu

    def crash(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(mmlu_module, "mmlu", crash)
    with pytest.raises(KeyboardInterrupt):
        run_suite(str(tiny_checkpoint), ["gem", "mean"], TINY, data_dir=data, heldout=HELDOUT, partial=partial)
    saved = json.loads(partial.read_text())["parts"]
    assert {"embedding:gem", "embedding:mean", "perplexity", "reconstruction"} <= set(saved) and "mmlu" not in saved
    monkeypatch.setattr(mmlu_module, "mmlu", real_mmlu)
    calls = []
    real_run_tasks = suite_module.run_tasks
    monkeypatch.setattr(suite_module, "run_tasks", lambda *a, **k: calls.append(1) or real_run_tasks(*a, **k))
    r = run_suite(str(tiny_checkpoint), ["gem", "mean"], TINY, data_dir=data, heldout=HELDOUT, partial=partial)
    assert not calls, "the embedding parts were reused, not recomputed"
    assert r["mmlu"]["n"] == 4 and [x["pooling"] for x in r["rows"]] == ["gem", "mean"]
    fresh = run_suite(str(tiny_checkpoint), ["gem", "mean"], TINY, data_dir=data, heldout=HELDOUT)
    assert r["rows"] == fresh["rows"] and r["perplexity"] == fresh["perplexity"]
    calls.clear()
    run_suite(str(tiny_checkpoint), ["gem"], TINY, seed=1, data_dir=data, heldout=HELDOUT, partial=partial,
              skip=("mmlu", "perplexity", "reconstruction"))
    assert calls, "a partial file made with other settings (seed) is not reused"


def test_a_reexported_model_does_not_resume_the_old_ones_partial_results(tmp_path, tiny_checkpoint, monkeypatch):
    """The resume key holds the weights' fingerprint: same folder, new weights -> computed again."""
    import shutil

    import lab.evaluation.language as language
    from lab.weights.loading import weights_fingerprint

    ckpt = tmp_path / "model"
    shutil.copytree(tiny_checkpoint, ckpt)
    assert weights_fingerprint(str(ckpt)) == weights_fingerprint(str(ckpt)) != weights_fingerprint(str(tiny_checkpoint))
    assert weights_fingerprint("tiny-llama") == "tiny-llama", "a registry name is its own fingerprint"
    data, partial = _tiny_eval_dir(tmp_path), tmp_path / "r.json.partial"
    calls = []
    real = language.heldout_perplexity
    monkeypatch.setattr(language, "heldout_perplexity", lambda *a, **k: calls.append(1) or real(*a, **k))
    only_ppl = dict(data_dir=data, heldout=HELDOUT, partial=partial,
                    skip=("embedding", "mmlu", "perplexity_ood", "reconstruction"))
    run_suite(str(ckpt), ["gem"], TINY, **only_ppl)
    run_suite(str(ckpt), ["gem"], TINY, **only_ppl)
    assert len(calls) == 1, "same weights: the saved part is reused"
    before = weights_fingerprint(str(ckpt))
    (ckpt / "README.md").write_text("a model card, edited")  # not the weights: still reused
    assert weights_fingerprint(str(ckpt)) == before
    weights = next(ckpt.rglob("*.safetensors"))
    weights.write_bytes(weights.read_bytes())  # re-exported: same name, new file
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 1_000_000_000))
    assert weights_fingerprint(str(ckpt)) != before
    run_suite(str(ckpt), ["gem"], TINY, **only_ppl)
    assert len(calls) == 2, "new weights behind the same name: computed again, not resumed"


def test_one_models_results_split_over_files_are_merged_into_one_row(tmp_path):
    """A later perplexity-only run fills what the main run lacks; other models stay separate."""
    def result(label, model, **kw):
        base = {"model": model, "label": label, "suite": "quick", "seed": 0, "rows": [], "mmlu": None,
                "perplexity": None, "perplexity_ood": None, "reconstruction": None}
        return {**base, **kw}

    rows = [{"pooling": "mean", "tasks": {"LocalLee50STS": 0.5}, "embedding_avg": 0.5}]
    files = {"main": result("Base", "base-model", rows=rows, perplexity=57.8, mmlu={"acc": 0.25, "acc_macro": 0.24}),
             "ppl": result("Base", "base-model", perplexity=99.0, perplexity_ood=34.9),
             "other": result("Other", "base-model", rows=rows, perplexity_ood=12.0)}
    for name, res in files.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(res))
    merged = load_results([tmp_path / f"{n}.json" for n in ("main", "ppl", "other")])
    assert [r["label"] for r in merged] == ["Base", "Other"], "same model, other label: its own row"
    assert merged[0]["perplexity"] == 57.8 and merged[0]["perplexity_ood"] == 34.9, "first value kept, gap filled"
    assert merged[0]["rows"] == rows and merged[0]["mmlu"]["acc"] == 0.25
    assert merged[0]["merged_from"] == [f"{tmp_path / 'ppl.json'}: perplexity_ood"]
    assert merged[1]["perplexity_ood"] == 12.0 and "merged_from" not in merged[1]
    table = [r for r in table_rows(merged) if r["model"] == "Base"]
    assert len(table) == 1 and table[0]["perplexity_ood"] == 34.9


def test_mteb_tasks_by_name_run_through_the_same_path_and_fail_at_once_offline(tmp_path, tiny_checkpoint, monkeypatch):
    """--mteb with a local task runs the by-name path end to end; an mteb task offline fails before
    any model is loaded, naming the task, its dataset and the cause; a misspelt name gets mteb's
    suggestion; the paper's list expands to 15 mteb tasks."""
    import time

    from lab.evaluation.mteb_by_name import GEM_PAPER_15, task_names

    assert task_names("gem-paper-15") == GEM_PAPER_15 and len(GEM_PAPER_15) == 15
    with pytest.raises(ValueError, match="Did you mean: 'Banking77Classification'"):
        task_names("Banking77Clasification")
    build_eval_data()  # the local task's rows (built once; cached)
    out = tmp_path / "by-name.json"
    assert cli_main(["eval", "--model", str(tiny_checkpoint), "--mteb", "LocalLee50STS", "--suite", "smoke",
                     "--skip", "mmlu,perplexity,perplexity_ood,reconstruction", "--output", str(out)]) == 0
    result = json.loads(out.read_text())
    assert list(result["rows"][0]["tasks"]) == ["LocalLee50STS"] and result["provenance"]["suite"]["tasks"] == ["LocalLee50STS"]
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import lab.evaluation.suite as suite

    loads = []
    monkeypatch.setattr(suite, "load", lambda *a, **k: loads.append(a))
    t = time.perf_counter()
    with pytest.raises(RuntimeError, match="--mteb STSBenchmark needs its data \\(mteb/stsbenchmark-sts\\).*offline"):
        suite.run_suite(str(tiny_checkpoint), suite=dataclasses.replace(suite.SUITES["smoke"], tasks=("STSBenchmark",)))
    assert not loads and time.perf_counter() - t < 30, "failed at once, before loading a model"


def test_the_wide_suite_adds_two_kinds_of_text_and_runs_them_through_mteb(tmp_path, tiny_checkpoint):
    """The wide suite: every local task (the quick five and two new kinds: whole articles, exam
    questions by subject), on every row; the new tasks run end to end through the same path."""
    from lab.evaluation.suite import SUITES
    from lab.evaluation.tasks import LOCAL_TASK_NAMES, MMLU_TOPIC_QUESTIONS, TASK_NAMES, WIDE, WIDE_TASK_NAMES, task_rows

    build_eval_data()
    wide = SUITES["wide"]
    assert wide.tasks == LOCAL_TASK_NAMES and set(TASK_NAMES) < set(wide.tasks) and wide.mmlu_limit >= 400
    rows = task_rows(WIDE)
    texts, subjects = rows["LocalMMLUTopicClustering"]
    assert len(set(subjects)) == 57 and len(texts) == 57 * MMLU_TOPIC_QUESTIONS
    articles, topics = rows["LocalBBCArticleClustering"]
    assert len(articles) == len(read_eval("bbc.jsonl")) and len(set(topics)) == 5
    assert len(rows["LocalBBCRetrieval"][0]) > 4 * len(task_rows(SUITES["quick"].sizes)["LocalBBCRetrieval"][0])
    out = tmp_path / "wide.json"
    assert cli_main(["eval", "--model", str(tiny_checkpoint), "--mteb", "local-new", "--suite", "smoke",
                     "--skip", "mmlu,perplexity,perplexity_ood,reconstruction", "--output", str(out)]) == 0
    scores = json.loads(out.read_text())["rows"][0]["tasks"]
    assert list(scores) == list(WIDE_TASK_NAMES) and all(0 <= v <= 1 for v in scores.values())

"""The app's story views: the first view (one prefill, both uses), the mask builder with its live leak
check, reconstruction that says whether it stopped, and what training buys and costs — on the
shipped-like tiny GEM model (the shipped k, sink and readout head)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lab.app import handlers as h
from lab.app.builder import built_mask, mask_builder, no_leak_below, row_roles
from lab.app.costs import training_stages, training_view
from lab.app.why import MAX_COMPARE, why_gem
from lab.gem.masks import Role, gem_mask, gist_mask
from lab.gem.model import RECONSTRUCT_SLACK
from lab.weights.checkpoints import save_checkpoint
from lab.weights.registry import SHIPPED_FROM, SHIPPED_GEM

from .conftest import fp32_app_session, shipped_like_gem

TEXT = "The Eiffel Tower is in Paris. It was built in 1889 for a fair."


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    ckpt = save_checkpoint(shipped_like_gem(max_length=128), tmp_path_factory.mktemp("views") / "gem")
    s = fp32_app_session(ckpt)  # the same verdicts on every CPU
    s.models()
    return s


def test_the_first_view_answers_and_ranks_with_one_embedding(session):
    _, gem = session.models()
    compare = "a tower in Paris\nthe football season\ninterest rates"
    r = why_gem(session, TEXT, " Question: where is it? Answer:", compare, 6)
    one = h.embed_and_answer(session, TEXT, " Question: where is it? Answer:", 6)
    assert r["answer"] == one["answer"] and "same answer and embedding: yes" in r["info"]
    texts = compare.splitlines()
    expected = gem.encode(texts) @ one["embedding"]  # the ranking uses the one-prefill embedding
    assert [row[2] for row in r["ranked"]] == [texts[i] for i in np.argsort(-expected, kind="stable")]
    assert np.allclose([row[1] for row in r["ranked"]], np.sort(expected)[::-1], atol=1e-3)
    with pytest.raises(ValueError, match="at least one text"):
        why_gem(session, TEXT, " q", "  \n ", 4)
    with pytest.raises(ValueError, match=f"at most {MAX_COMPARE}"):
        why_gem(session, TEXT, " q", "\n".join(f"t{i}" for i in range(MAX_COMPARE + 1)), 4)


def test_built_masks_are_pure_functions_of_roles():
    roles = torch.tensor([[Role.BOS, Role.PREFIX, Role.PREFIX, Role.SPECIAL, Role.SPECIAL, Role.SUFFIX, Role.SUFFIX]])
    own = gem_mask(roles, suffix_sees_bos=True)
    assert torch.equal(built_mask(roles, "gem", False, True), own)
    assert torch.equal(built_mask(roles, "gist", False, True), own | gist_mask(roles))
    broken = built_mask(roles, "gem", True, True)
    opened = broken & ~own
    q, k = roles[0, :, None], roles[0, None, :]
    assert torch.equal(opened[0, 0], (q == Role.SUFFIX) & (k == Role.PREFIX)), "break opens suffix → prefix, only"
    causal = built_mask(roles, "causal", False, True)[0, 0]
    assert torch.equal(causal, torch.ones(7, 7, dtype=torch.bool).tril())
    with pytest.raises(ValueError, match="pick one of gem, gist, causal"):
        built_mask(roles, "sliding", False, True)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_leak_check_tells_the_same_in_fp32_and_bf16(session, dtype):
    """The app loads bf16 on a CPU with native bf16: its float noise must not read as a difference
    (the GEM mask: no leak), nor hide a leak (the broken mask). (The gist mask's difference, 0.28 of
    the largest logit on the shipped model, is within bf16 noise on this random tiny one: fp32 only.)"""
    from lab.weights.loading import load

    base, gem = session.models()
    in_dtype = h.Session(session.base_name, session.gem_name, base=base,
                         gem=load(session.gem_name, dtype=dtype))
    assert in_dtype.models()[1].dtype == getattr(torch, dtype)
    assert "No leak." in mask_builder(in_dtype, TEXT, 5, "gem", False)["info"]
    assert "Leak." in mask_builder(in_dtype, TEXT, 5, "gem", True)["info"]
    if dtype == "float32":
        assert "not a leak" in mask_builder(in_dtype, TEXT, 5, "gist", False)["info"]


def test_the_mask_builder_runs_the_leak_check_live(session):
    _, gem = session.models()
    text = h.cut_to_tokens(gem, TEXT, h.MAX_ATTENTION_TOKENS)[0]  # what the builder reads
    ids, roles, prefix, suffix = row_roles(gem, text, 5)
    assert roles[0, 0] == Role.BOS and int((roles == Role.SPECIAL).sum()) == gem.gem_config.k, "the sink and all k"
    ok = mask_builder(session, TEXT, 5, "gem", False)
    assert ok["report"]["relative_diff"] < no_leak_below(gem.dtype) and "No leak" in ok["info"]
    broken = mask_builder(session, TEXT, 5, "gem", True)
    n_pre, n_suf = len(gem.text_ids(prefix)), len(gem.text_ids(suffix))
    assert broken["report"]["suffix_sees_prefix"] == n_pre * n_suf and "Leak." in broken["info"]
    assert broken["report"]["relative_diff"] > no_leak_below(gem.dtype)
    assert "Leak." in mask_builder(session, TEXT, 5, "causal", False)["info"]
    gist = mask_builder(session, TEXT, 5, "gist", False)
    assert gist["report"]["suffix_sees_prefix"] == 0 and "not a leak" in gist["info"]
    fig = ok["mask"].data[0]
    assert len(fig.x) == len(ids) and np.array(fig.z).shape == (len(ids), len(ids))
    with pytest.raises(ValueError, match="pick a split from 1 to"):
        mask_builder(session, TEXT, 0)


def test_reconstruction_says_whether_it_stopped(session, monkeypatch):
    _, gem = session.models()
    text = "Paris is the capital of France."
    r = h.reconstruct(session, text)
    assert r["text"] == gem.reconstruct(text), "the tab shows what reconstruct() hands a user"
    own = gem.gem_config.reconstruct_beams  # the shipped model's, which the shipped-like one copies
    assert h.default_beams(session) == own, "the beams slider starts at the model's own width"
    assert h.default_beams(h.Session(gem_name=session.gem_name)) == own, "read from the folder, before loading"
    assert h.default_beams(h.Session(gem_name="tiny-smollm2")) == 1, "a base model has no GEM config: greedy"
    assert ("greedy" if own == 1 else f"beam search, {own} beams") in r["info"]
    ids = gem.text_ids(text)
    beam = h.reconstruct(session, text, num_beams=3)
    assert beam["text"] == gem.reconstruct(text, num_beams=3) and "beam search, 3 beams" in beam["info"]
    with pytest.raises(ValueError, match="beams=0"):
        h.reconstruct(session, text, num_beams=0)
    monkeypatch.setattr(gem, "reconstruct_ids", lambda t, max_new_tokens=None, num_beams=1: list(ids))
    assert "the text exactly" in h.reconstruct(session, text)["info"]
    assert "stopped** by itself right where the text ends" in h.reconstruct(session, text)["info"]
    monkeypatch.setattr(gem, "reconstruct_ids",
                        lambda t, max_new_tokens=None, num_beams=1: list(ids) + [ids[0]] * RECONSTRUCT_SLACK)
    info = h.reconstruct(session, text)["info"]
    assert "the text exactly" not in info and "did not stop" in info and f"ran on {RECONSTRUCT_SLACK} tokens" in info


def test_what_training_buys_and_costs_comes_from_the_result_files(session, tmp_path):
    r = training_view(session)
    gem_json = json.loads((Path(__file__).parents[1] / "results" / "gem.json").read_text())
    assert f"{100 * gem_json['rows'][0]['embedding_avg']:.1f}" in r["buys"]
    assert "not for the model loaded now" in r["buys"], "a tiny model is loaded: the numbers are the shipped pair's"
    assert "MMLU acc" in r["costs"] and "At run time" in r["costs"] and "5 extra tokens" in r["costs"]
    with pytest.raises(FileNotFoundError, match="make eval-report"):
        training_view(session, results=tmp_path)


def test_training_stages_follow_the_shipped_lineage():
    for name, path in SHIPPED_GEM.items():
        lines = training_stages(path)
        chain, n = [name], name
        while n in SHIPPED_FROM:
            n = SHIPPED_FROM[n]
            chain.insert(0, n)
        assert [line.split(":")[0] for line in lines] == chain
        last = json.loads((path / "metrics.jsonl").read_text().splitlines()[-1])
        assert f"{last['step']} steps in " in lines[-1]


def test_a_resumed_runs_wall_time_adds_its_segments(tmp_path):
    from lab.app.costs import _logged_run

    log = [{"step": 5, "elapsed_s": 100.0}, {"step": 10, "elapsed_s": 200.0},  # interrupted after step 10
           {"step": 10, "elapsed_s": 90.0}, {"step": 15, "elapsed_s": 180.0}]  # resumed: its clock restarts
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in log) + "\n")
    assert _logged_run(tmp_path) == (15, 380.0)
    assert training_stages(tmp_path) == [f"{tmp_path.name}: 15 steps in 6.3 min"]

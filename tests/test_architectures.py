"""Your own model: the path a user takes with a new backbone, over six architectures built in code.

For each: `lab start` checks it and writes its recipe (per-model settings chosen by the code) ->
train a few steps -> save -> load -> encode / generate / embed_and_generate, with equivalence
checks (batched vs one at a time, one prefill vs two passes, cache vs no cache). An architecture
GEM cannot run on gets an error naming what is missing.
"""

import numpy as np
import pytest
import torch

import lab
from lab.gem.support import architecture_problem, check_architecture, layer_linear_names
from lab.training.config_files import config_from_args
from lab.training.loop import train
from lab.training.your_model import start_config

from .conftest import with_flat

ARCHITECTURES = ["llama", "qwen2", "gemma3", "mistral", "phi3", "smollm2"]
TEXTS = ["a short text", "another text that is a good deal longer than the first one, on purpose", "x y z"]
DOC = "The river runs through the old town, past the mill and the church, to the sea."


@pytest.fixture(scope="module", params=ARCHITECTURES)
def trained(request, tmp_path_factory):
    """(arch, recipe, checkpoint): `lab start` on tiny-ARCH, then a few steps of its recipe made tiny."""
    arch, tmp = request.param, tmp_path_factory.mktemp(request.param)
    recipe, report = start_config(f"tiny-{arch}", tmp / "recipe.yaml")
    cfg = config_from_args(str(recipe), [])
    tiny = config_from_args("configs/tiny.yaml", [])
    cfg = with_flat(cfg, corpus=tiny.rows.corpus, heldout=tiny.rows.heldout, output_dir=str(tmp / "run"), steps=4,
                    ntp_steps=2, batch_size=4, max_length=48, save_every=4, eval_every=0, k=2, lora_r=4,
                    teacher="", distill_weight=0.0, distill_embedding_weight=0.0, head_init="default",
                    head_refit=False, span_views=0.0, readout_dim=0, readout_head=False, precision="fp32")
    return arch, report, train(cfg)


def test_start_chooses_the_per_model_settings(trained):
    arch, report, ckpt = trained
    gem = lab.load(str(ckpt), dtype="float32")
    assert gem.gem_config.sink_token == report.sink_token, "sink_token: auto resolved and saved"
    if report.bos_prepended:
        assert gem.gem_config.sink_token is None and gem.bos == [gem.tokenizer.bos_token_id]
    else:
        assert gem.bos == [gem.tokenizer.convert_tokens_to_ids(report.sink_token)]
    import json

    adapter = json.loads((ckpt / "adapter" / "adapter_config.json").read_text())
    assert set(adapter["target_modules"]) == set(report.lora_targets) == set(layer_linear_names(gem.model))
    if arch == "phi3":
        assert {"qkv_proj", "gate_up_proj"} <= set(report.lora_targets), "fused projections adapted too"


def test_encode_is_the_same_batched_or_one_at_a_time(trained):
    _, _, ckpt = trained
    gem = lab.load(str(ckpt), dtype="float32")
    batched = gem.encode(TEXTS, batch_size=3)
    single = np.stack([gem.encode([t])[0] for t in TEXTS])
    np.testing.assert_allclose(batched, single, atol=2e-5)


def test_one_prefill_equals_embedding_and_generating_separately(trained):
    _, _, ckpt = trained
    gem = lab.load(str(ckpt), dtype="float32")
    emb, answer = gem.embed_and_generate(DOC, " And then", max_new_tokens=6)
    np.testing.assert_allclose(emb, gem.encode([DOC])[0], atol=2e-5)
    ids = gem.bos + gem.text_ids(DOC) + gem.text_ids(" And then")
    new = gem.generate_ids(torch.tensor([ids]), max_new_tokens=6)
    assert answer == gem.tokenizer.decode(new[0], skip_special_tokens=True)


def test_generation_with_the_cache_equals_full_forwards(trained):
    _, _, ckpt = trained
    gem = lab.load(str(ckpt), dtype="float32")
    ids = gem.bos + gem.text_ids("Once upon a time")
    cached = gem.generate_ids(torch.tensor([ids]), max_new_tokens=5)[0].tolist()
    seq = list(ids)
    with torch.no_grad():
        for _ in range(5):  # no cache: the whole sequence again at every step
            logits = gem.model(torch.tensor([seq])).logits[0, -1]
            logits[gem.special_ids] = float("-inf")
            seq.append(int(logits.argmax()))
    assert cached == seq[len(ids):]


def test_an_architecture_gem_cannot_run_on_is_named():
    from transformers import MambaConfig, MambaForCausalLM

    mamba = MambaForCausalLM(MambaConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, state_size=4))
    assert "no attention layers" in architecture_problem(mamba)
    llama, _ = lab.weights.load_causal_lm("tiny-llama")
    assert architecture_problem(llama) is None
    llama.config._attn_implementation = "flash_attention_2"
    with pytest.raises(ValueError, match="cannot take GEM's custom attention mask.*sdpa"):
        check_architecture(llama)


def test_cli_start_refuses_to_overwrite_and_names_the_recipe(tmp_path, capsys):
    from lab.cli import main

    out = tmp_path / "r.yaml"
    assert main(["start", "tiny-qwen2", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "sink: '</s>'" in text and f"python -m lab train --config {out}" in text
    assert main(["start", "tiny-qwen2", "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err

"""CUDA checks (`make test-gpu`): bf16 on GPU agrees with fp32, and the shared prefill matches."""

import pytest
import torch

from .conftest import tiny_gem

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

TEXTS = ["the cat sat on the mat", "GEM tokens carry the prefix", "héllo wörld"]


def test_cuda_bf16_matches_cpu_fp32():
    cpu = tiny_gem("llama", k=1)
    gpu = tiny_gem("llama", k=1)
    gpu.model.to("cuda", torch.bfloat16)
    a, b = cpu.encode(TEXTS), gpu.encode(TEXTS)
    assert (a * b).sum(-1).min() > 0.99


def test_cuda_embed_and_generate_matches_generate():
    gem = tiny_gem("gemma3", k=2)
    gem.model.to("cuda")
    doc, prompt = "a document that is long enough to cross the sliding window", " Q:"
    _, text = gem.embed_and_generate(doc, prompt, max_new_tokens=8)
    ids = gem.bos + gem.tokenizer(doc, add_special_tokens=False)["input_ids"] + \
        gem.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    plain = gem.generate_ids(torch.tensor([ids]), max_new_tokens=8)
    assert text == gem.tokenizer.decode(plain[0], skip_special_tokens=True)

"""CUDA checks (`make test-gpu`): bf16 on GPU agrees with fp32, and the shared prefill matches."""

import pytest
import torch

from .conftest import flat_config, tiny_gem, with_flat

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


def _step_on(device: str, tmp_path) -> tuple[dict, dict]:
    """Losses and gradients of one mixed training step (fp32) of a tiny model on `device`."""
    from lab.training.collate import GemCollator
    from lab.training.loop import batch_to_device
    from lab.training.losses import LogitScale
    from lab.training.objective import GemObjective
    from lab.training.setup import prepare_model

    cfg = flat_config(model="tiny-llama", batch_size=8, max_length=48, p_plain=0.5, positive="dropout",
                      output_dir=str(tmp_path), precision="fp32")
    torch.manual_seed(0)
    gem = prepare_model(cfg, torch.device(device))
    objective = GemObjective(gem.model, LogitScale().to(device), fused_loss=True, trainable_head_rows=gem.special_ids)
    batch = GemCollator(gem.tokenizer, gem.special_ids, gem.bos, cfg)([{"text": t, "index": i}
                                                                      for i, t in enumerate(TEXTS * 3)])
    batch = batch_to_device(batch, device)
    out = objective(batch, alpha=0.5)  # TF32 is off by default in PyTorch: fp32 products on CUDA
    out["backward"].backward()
    grads = {n: p.grad.detach().cpu() for n, p in objective.named_parameters() if p.grad is not None}
    return {k: float(out[k]) for k in ("ntp", "cl")}, grads


def test_cuda_training_step_matches_cpu(tmp_path):
    """The training step on CUDA (fp32, no TF32) has the CPU step's losses and gradients."""
    cpu_loss, cpu_grads = _step_on("cpu", tmp_path)
    gpu_loss, gpu_grads = _step_on("cuda", tmp_path)
    assert cpu_loss == pytest.approx(gpu_loss, rel=1e-4)
    assert cpu_grads.keys() == gpu_grads.keys() and cpu_grads
    for name, g in cpu_grads.items():
        torch.testing.assert_close(gpu_grads[name], g, rtol=1e-3, atol=1e-5, msg=name)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cuda_training_run_saves_a_loadable_checkpoint(precision, tmp_path):
    """A short run on the GPU (through accelerate) trains, saves and loads back on the CPU."""

    from lab.weights.loading import load
    from lab.storage import PROJECT_ROOT, read_jsonl
    from lab.training.config_files import config_from_args
    from lab.training.loop import train

    cfg = config_from_args(str(PROJECT_ROOT / "configs" / "tiny.yaml"), [])
    cfg = with_flat(cfg, corpus=str(PROJECT_ROOT / cfg.rows.corpus), heldout=str(PROJECT_ROOT / cfg.rows.heldout),
                              output_dir=str(tmp_path / "run"), steps=6, ntp_steps=3, save_every=6,
                              precision=precision)
    ckpt = train(cfg)
    losses = [m["loss"] for m in read_jsonl(tmp_path / "run" / "metrics.jsonl") if "loss" in m]
    assert losses and all(torch.isfinite(torch.tensor(losses)))
    gem = load(str(ckpt), device="cpu", dtype="float32")
    assert torch.isfinite(torch.as_tensor(gem.encode(TEXTS))).all()


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
@pytest.mark.parametrize("k, sink, pack", [(1, False, False), (5, True, True)])
def test_cuda_flex_attention_gives_the_dense_paths_loss_and_gradients(arch, k, sink, pack, tmp_path):
    """FlexAttention (block-sparse GEM mask) against SDPA with the dense mask: the same mixed
    training step, losses and every gradient (the CPU has no FlexAttention backward)."""
    from lab.gem.flex import FLEX
    from lab.training.collate import GemCollator
    from lab.training.loop import batch_to_device
    from lab.training.losses import LogitScale
    from lab.training.objective import GemObjective
    from lab.training.setup import prepare_model

    results = {}
    for attention in ("sdpa", FLEX):
        cfg = flat_config(model=f"tiny-{arch}", k=k, sink_token="<s>" if sink else None, batch_size=8, max_length=48,
                          p_plain=0.3, positive="dropout", pack=pack, output_dir=str(tmp_path), precision="fp32")
        cfg = cfg.updated({"run.attention": attention})
        torch.manual_seed(0)
        gem = prepare_model(cfg, torch.device("cuda"))
        objective = GemObjective(gem.model, LogitScale().to("cuda"), gem.suffix_sees_bos,
                                 trainable_head_rows=gem.special_ids)
        batch = GemCollator(gem.tokenizer, gem.special_ids, gem.bos, cfg)([{"text": t, "index": i}
                                                                          for i, t in enumerate(TEXTS * 3)])
        out = objective(batch_to_device(batch, "cuda"), alpha=0.5)
        out["backward"].backward()
        results[attention] = ({k_: float(out[k_]) for k_ in ("ntp", "cl")},
                              {n: p.grad.detach().cpu() for n, p in objective.named_parameters() if p.grad is not None})
    (dense_loss, dense_grads), (flex_loss, flex_grads) = results["sdpa"], results[FLEX]
    assert flex_loss == pytest.approx(dense_loss, rel=1e-4)
    assert flex_grads.keys() == dense_grads.keys() and dense_grads
    for name, g in dense_grads.items():
        torch.testing.assert_close(flex_grads[name], g, rtol=1e-3, atol=1e-5, msg=name)

"""The optimised training step equals the reference step: the NTP loss computed from hidden states
without full-vocabulary logits (`fused_loss`), and packed contrastive views (`pack_views`)."""

import inspect

import pytest
import torch

from tests.conftest import flat_config
from lab.gem.lm_loss import IGNORE_INDEX, ntp_loss_sum
from lab.training.fused_loss import ntp_loss_sum_from_hidden
from lab.training.collate import GemCollator
from lab.training.losses import LogitScale
from lab.training.objective import GemObjective
from lab.training.setup import prepare_model

TEXTS = ["the first training text", "second one here, a bit longer than the first", "third text",
         "fourth text about cats", "fifth about stocks and bonds", "a sixth one", "seven", "eight is last"]


def test_linear_cross_entropy_equals_logits_then_cross_entropy():
    torch.manual_seed(0)
    hidden = torch.randn(2, 7, 16, requires_grad=True)
    weight = torch.randn(50, 16, requires_grad=True)
    labels = torch.randint(0, 50, (2, 7))
    labels[0, 3] = labels[1, 0] = IGNORE_INDEX
    rows = [3, 49]
    ref_total, ref_count = ntp_loss_sum(hidden @ weight.T, labels)
    ref_total.backward()
    ref_h, ref_w = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    total, count = ntp_loss_sum_from_hidden(hidden, weight, labels, grad_rows=rows, chunk=4)
    total.backward()
    assert int(count) == int(ref_count)
    torch.testing.assert_close(total, ref_total, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(hidden.grad, ref_h, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(weight.grad[rows], ref_w[rows], rtol=1e-5, atol=1e-6)
    others = torch.ones(50, dtype=torch.bool)
    others[rows] = False
    assert (weight.grad[others] == 0).all(), "rows outside grad_rows get no gradient"


def _objective_grads(arch: str, tmp_path, fused_loss: bool, pack_views: bool, precision: str = "fp32"
                     ) -> tuple[dict, dict]:
    cfg = flat_config(model=f"tiny-{arch}", batch_size=8, max_length=48, p_plain=0.5, positive="dropout",
                      output_dir=str(tmp_path), precision=precision)
    torch.manual_seed(0)
    gem = prepare_model(cfg, torch.device("cpu"))
    objective = GemObjective(gem.model, LogitScale(), fused_loss=fused_loss, trainable_head_rows=gem.special_ids)
    batch = GemCollator(gem.tokenizer, gem.special_ids, gem.bos, cfg, pack_views=pack_views)(
        [{"text": t, "index": i} for i, t in enumerate(TEXTS)])
    out = objective(batch, alpha=0.5)
    out["backward"].backward()
    grads = {n: p.grad.float().clone() for n, p in objective.named_parameters() if p.grad is not None}
    return {k: float(out[k]) for k in ("ntp", "cl")}, grads


@pytest.mark.parametrize("arch", ["llama", "qwen2"])  # tied and untied LM heads
def test_fast_step_has_the_reference_loss_and_gradients(arch, tmp_path):
    ref_loss, ref_grads = _objective_grads(arch, tmp_path, fused_loss=False, pack_views=False)
    loss, grads = _objective_grads(arch, tmp_path, fused_loss=True, pack_views=True)
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    assert grads.keys() == ref_grads.keys() and len(grads) > 10
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_packed_views_are_fewer_positions_with_the_same_rows():
    from lab.training.collate import view_batch
    from lab.gem.tokens import Row

    rows = [Row([1, 5, 6, 99], [1, 2, 2, 3]), Row([1, 7, 99], [1, 2, 3]), Row([1, 8, 9, 10, 99], [1, 2, 2, 2, 3]),
            Row([1, 11, 99], [1, 2, 3])]
    plain, packed = view_batch(rows, 0), view_batch(rows, 0, pack_to=8)
    assert plain["input_ids"].numel() == 20 and packed["input_ids"].numel() == 16
    for view in (plain, packed):
        flat = view["input_ids"].flatten()
        assert flat[view["s_index"][:, 0]].tolist() == [99, 99, 99, 99]
        # the token before each S is the row's last text token, in input order
        assert flat[view["s_index"][:, 0] - 1].tolist() == [6, 7, 10, 11]
    # the fast paths are the defaults the training loop uses
    assert GemCollator.pack_views and inspect.signature(GemObjective).parameters["fused_loss"].default is True


def test_bf16_step_matches_the_fp32_step_to_bf16_precision(tmp_path):
    """`precision: auto` trains in bf16 on CPUs with native bf16 (bench.train_step times it): the
    same step, its losses within 2 % and its gradient pointing the same way (cosine > 0.99)."""
    ref_loss, ref_grads = _objective_grads("llama", tmp_path, fused_loss=True, pack_views=True)
    loss, grads = _objective_grads("llama", tmp_path, fused_loss=True, pack_views=True, precision="bf16")
    for k in ref_loss:
        assert abs(loss[k] - ref_loss[k]) <= 0.02 * abs(ref_loss[k]), (k, loss[k], ref_loss[k])
    assert grads.keys() == ref_grads.keys()
    a = torch.cat([ref_grads[n].flatten() for n in sorted(ref_grads)])
    b = torch.cat([grads[n].flatten() for n in sorted(grads)])
    assert torch.nn.functional.cosine_similarity(a, b, dim=0) > 0.99

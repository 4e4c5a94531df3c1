"""The reconstruction budget curve: every checkpoint of one run evaluated, points resumed, never mixed."""

import json
from pathlib import Path

from research.reconstruction.budget import checkpoints_by_step, curve_point, final_suite, reconstruction_curve, summary_table

ROOT = Path(__file__).resolve().parents[2]


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "recon.yaml"
    path.write_text(f"base: {ROOT / 'configs' / 'tiny.yaml'}\nrun: {{output_dir: {tmp_path / 'run'}, save_every: 2}}\n"
                    "rows: {p_plain: 0.0, reconstruction_share: 1.0}\noptim: {steps: 4}\nobjective: {ntp_steps: 4}\n")
    return path


def test_curve_evaluates_every_checkpoint_once_and_resumes(tmp_path):
    config, out = _config(tmp_path), tmp_path / "curve"
    finals = []

    def final(ckpt):
        finals.append(ckpt.name)
        return {"embedding_avg": 0.5, "perplexity": 10.0, "perplexity_ood": 20.0}

    result = reconstruction_curve(config, out, lengths=(4,), per_length=2, final=final)
    assert [s for s, _ in checkpoints_by_step(tmp_path / "run")] == [2, 4]
    assert finals == ["checkpoint-4"] and result["final"]["step"] == 4
    assert sorted(result["points"], key=int) == ["2", "4"]
    for point in result["points"].values():
        assert point["reconstruction"]["count"] == {"4": 2}
        assert 0.0 <= point["reconstruction"]["token_accuracy"]["4"] <= 1.0
        assert point["train_ntp_loss"] is not None
    table = out.with_suffix(".md").read_text()
    assert "| 2 | 8 |" in table and "| 4 | 16 |" in table  # rows seen = step x batch 4
    assert "reconstruction rows only" in table
    assert out.with_suffix(".html").is_file()

    # an evaluation stopped after step 2: only step 4 is evaluated again, training is not redone
    saved = json.loads(out.with_suffix(".json").read_text())
    del saved["points"]["4"]
    out.with_suffix(".json").write_text(json.dumps(saved))
    calls = []

    def counting(ckpt, heldout, lengths, per_length):
        calls.append(ckpt.name)
        return curve_point(ckpt, heldout, lengths, per_length)

    again = reconstruction_curve(config, out, lengths=(4,), per_length=2, evaluate=counting, final=final)
    assert calls == ["checkpoint-4"] and finals == ["checkpoint-4"]  # the final suite is not redone
    assert again["points"]["2"] == result["points"]["2"]

    # other settings (here: another length) never reuse points measured under the old ones
    calls.clear()
    other = reconstruction_curve(config, out, lengths=(3,), per_length=2, evaluate=counting, final=final)
    assert calls == ["checkpoint-2", "checkpoint-4"]
    assert all(p["reconstruction"]["count"] == {"3": 2} for p in other["points"].values())


def test_summary_names_each_runs_best_and_last_checkpoint(tmp_path):
    config, out = _config(tmp_path), tmp_path / "curve"
    result = reconstruction_curve(config, out, lengths=(4,), per_length=2, final=final_suite)
    # make step 2 the best at 4 tokens and step 4 the last, with different numbers
    result["points"]["2"]["reconstruction"]["token_accuracy"]["4"] = 0.75
    result["points"]["4"]["reconstruction"]["token_accuracy"]["4"] = 0.25
    table = summary_table({"recon": result})
    header, _, row = table.strip().splitlines()
    assert "token acc. @4" in header and "last step: token acc. @4" in header
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:3] == ["recon", "1", "4"] and cells[4] == "4 × 4"  # run, k, LoRA rank; steps × rows
    assert cells[6] == "2" and cells[8] == "75.0"  # best step and its token accuracy
    assert cells[-3] == "25.0 (step 4)"
    final = result["final"]  # the real suite on the tiny model: its numbers, as the table shows them
    assert cells[-2] == f"{100 * final['embedding_avg']:.1f}"
    assert cells[-1] == f"{final['perplexity']:.2f} / {final['perplexity_ood']:.2f}"
    assert summary_table({}) == ""


def test_a_mixed_run_from_a_checkpoint_is_described_as_such():
    from research.reconstruction.budget import run_rows
    from tests.conftest import flat_config

    text = run_rows(flat_config(init_from="gem-smollm2-135m", p_plain=0.2, reconstruction_min_tokens=4, steps=10,
                                ntp_steps=0, alpha_cl=0.3, distill_weight=1.0))
    assert text.startswith("starting from `gem-smollm2-135m`, 20 % plain rows")
    assert "random length from 4 tokens" in text and "contrastive weight 0.3" in text and "only" not in text

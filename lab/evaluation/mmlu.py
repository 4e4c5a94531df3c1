"""MMLU through lm-eval (the real harness) on the local copy of the MMLU test set.

The task is a local YAML (multiple choice A-D, the standard MMLU prompt) written next to a run's
results; lm-eval reads `mmlu.jsonl` (shuffled with seed 0 at build time, so `limit` takes a spread
of subjects) and draws the few-shot examples from the same file with a fixed seed. The model runs
as the plain LM: no special tokens are appended (the paper's protocol).

Scores: `acc` over all questions asked, and `acc_macro`, the mean of per-subject accuracies (the
paper's MMLU number), both with lm-eval's standard error for `acc`.
"""

from __future__ import annotations

import logging
import tempfile
from collections import defaultdict
from pathlib import Path

from .data import eval_file

log = logging.getLogger(__name__)

TASK = "gem_lab_mmlu"
TASK_YAML = """\
task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {path}
test_split: test
fewshot_split: test
fewshot_config:
  sampler: default
output_type: multiple_choice
doc_to_text: "The following is a multiple choice question about {{{{topic.replace('_', ' ')}}}}.\\n\\n{{{{question.strip()}}}}\\nA. {{{{answer_a}}}}\\nB. {{{{answer_b}}}}\\nC. {{{{answer_c}}}}\\nD. {{{{answer_d}}}}\\nAnswer:"
doc_to_choice: ["A", "B", "C", "D"]
doc_to_target: "{{{{['A','B','C','D'].index(correct_answer)}}}}"
target_delimiter: " "
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""


def write_task(folder: Path, data_dir=None) -> Path:
    path = eval_file("mmlu.jsonl", data_dir).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{TASK}.yaml").write_text(TASK_YAML.format(task=TASK, path=path), encoding="utf-8")
    return folder


def mmlu(gem, num_fewshot: int = 5, limit: int | None = None, batch_size: int = 4, seed: int = 0,
         data_dir=None) -> dict:
    """{"acc", "acc_stderr", "acc_macro", "n", "subjects", "num_fewshot"} for a GemModel's plain LM."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from ..forward import unwrap

    lm = HFLM(pretrained=unwrap(gem.model), tokenizer=gem.tokenizer, batch_size=batch_size,
              device=str(gem.device), max_length=2048)
    with tempfile.TemporaryDirectory(prefix="gem-lab-lmeval-") as tmp:
        manager = TaskManager(include_path=str(write_task(Path(tmp), data_dir)))
        out = lm_eval.simple_evaluate(
            model=lm, tasks=[TASK], task_manager=manager, num_fewshot=num_fewshot, limit=limit,
            random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed,
            log_samples=True, bootstrap_iters=0)
    res = out["results"][TASK]
    by_subject: dict[str, list[float]] = defaultdict(list)
    for s in out["samples"][TASK]:
        by_subject[s["doc"]["topic"]].append(float(s["acc"]))
    macro = sum(sum(v) / len(v) for v in by_subject.values()) / max(len(by_subject), 1)
    return {"acc": float(res["acc,none"]), "acc_stderr": _float(res.get("acc_stderr,none")),
            "acc_macro": macro, "n": sum(len(v) for v in by_subject.values()),
            "subjects": len(by_subject), "num_fewshot": num_fewshot}


def _float(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return None

"""MMLU through lm-eval (the real harness) on the local copy of the MMLU test set.

The task is a local YAML (multiple choice A-D, the standard MMLU prompt) written next to a run's
results; lm-eval reads `mmlu.jsonl` (shuffled with seed 0 at build time, so `limit` takes a spread
of subjects) and draws the few-shot examples from the same file with a fixed seed. The model runs
as the plain LM: no special tokens are appended (the paper's protocol); a model trained with a sink
token reads the sink in front of every text (`harness_lm`), as it does everywhere else.

Scores: `acc` over all questions asked, and `acc_macro`, the mean of per-subject accuracies (the
paper's MMLU number), with lm-eval's standard error for `acc`; `p_correct`, the mean probability
of the right letter (softmax over the four letters' log-likelihoods): a graded score that moves
before accuracy does. `per_question` keeps both per question (by lm-eval doc id) so that two
models asked the same questions are compared *paired* (`paired_difference`), which is far tighter
than comparing two accuracies each known to ±1/sqrt(n).
"""

from __future__ import annotations

import logging
import math
import tempfile
from collections import defaultdict
from pathlib import Path

from ..corpora.eval_sets import eval_file
from ..gem.forward import unwrap

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
    from lm_eval.tasks import TaskManager

    lm = harness_lm(gem, batch_size)
    with tempfile.TemporaryDirectory(prefix="gem-lab-lmeval-") as tmp:
        manager = TaskManager(include_path=str(write_task(Path(tmp), data_dir)))
        out = lm_eval.simple_evaluate(
            model=lm, tasks=[TASK], task_manager=manager, num_fewshot=num_fewshot, limit=limit,
            random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed,
            log_samples=True, bootstrap_iters=0)
    res = out["results"][TASK]
    by_subject: dict[str, list[float]] = defaultdict(list)
    per_question = {}
    for s in sorted(out["samples"][TASK], key=lambda s: s["doc_id"]):
        by_subject[s["doc"]["topic"]].append(float(s["acc"]))
        per_question[str(s["doc_id"])] = [float(s["acc"]), letter_probability(s["filtered_resps"], s["target"])]
    macro = sum(sum(v) / len(v) for v in by_subject.values()) / max(len(by_subject), 1)
    p_correct = [p for _, p in per_question.values()]
    return {"acc": float(res["acc,none"]), "acc_stderr": _float(res.get("acc_stderr,none")),
            "acc_macro": macro, "p_correct": sum(p_correct) / max(len(p_correct), 1),
            "n": sum(len(v) for v in by_subject.values()), "subjects": len(by_subject),
            "num_fewshot": num_fewshot, "per_question": per_question}


def harness_lm(gem, batch_size: int = 4):
    """lm-eval's HF model around a GemModel's plain LM. A model trained with a sink token
    (`GemConfig.sink_token`) reads every text with the sink in front, as in training and in the
    lab's perplexity; lm-eval would not add it (it is not the tokenizer's BOS), so here it does."""
    from lm_eval.models.huggingface import HFLM

    sink = list(gem.sink_ids)

    class _HFLM(HFLM):
        def tok_encode(self, string, add_special_tokens=None, left_truncate_len=None, **kwargs):
            ids = sink + super().tok_encode(string, add_special_tokens=add_special_tokens, **kwargs)
            return ids[-left_truncate_len:] if left_truncate_len else ids

    return (_HFLM if sink else HFLM)(pretrained=unwrap(gem.model), tokenizer=gem.tokenizer, batch_size=batch_size,
                                    device=str(gem.device), max_length=2048)


def letter_probability(filtered_resps, target: int) -> float:
    """P(right letter) = softmax over the choices' log-likelihoods; resps: [(loglik, is_greedy), ...]."""
    logliks = [float(r[0]) for r in filtered_resps]
    top = max(logliks)
    weights = [math.exp(x - top) for x in logliks]
    return weights[int(target)] / sum(weights)


def paired_difference(a: dict, b: dict, field: str = "acc") -> dict | None:
    """Model b minus model a on the questions both answered: {"diff", "stderr", "n"} (x1, not %).

    field: "acc" (0/1 per question) or "p_correct". The standard error is that of a mean of
    per-question differences, so questions both models get right (or wrong) add no noise.
    None when either result lacks per-question scores or they share no question.
    """
    qa, qb = (a or {}).get("per_question"), (b or {}).get("per_question")
    if not qa or not qb:
        return None
    col = 0 if field == "acc" else 1
    diffs = [qb[k][col] - qa[k][col] for k in qa.keys() & qb.keys()]
    n = len(diffs)
    if n == 0:
        return None
    mean = sum(diffs) / n
    var = sum((d - mean) ** 2 for d in diffs) / (n - 1) if n > 1 else float("nan")
    return {"diff": mean, "stderr": (var / n) ** 0.5, "n": n}


def _float(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return None

"""mteb's own tasks by name, through the same encoder protocol and result files as the local tasks.

    python -m lab eval --model gem-smollm2-135m --mteb STSBenchmark,Banking77Classification --output results/x.json
    python -m lab eval --model gem-smollm2-135m --mteb gem-paper-15 --skip mmlu --output results/x.json

A name is one of the lab's local tasks (`lab.evaluation.tasks.LOCAL_TASK_NAMES`, offline), an mteb task
name, or a named list (`NAMED_LISTS`). mteb's tasks read their data from the Hugging Face hub (cached
after the first run): `check_data` loads it before any model is loaded, so an offline machine
fails at once, naming the task, its dataset and the cause.
"""

from __future__ import annotations

import os

from .tasks import LOCAL_TASK_NAMES, TASK_NAMES, WIDE_TASK_NAMES, remote_tasks

# The 15-task MTEB subset of the LLM2Vec protocol, which the GEM paper's "MTEB-15" follows (its
# Table 3: Llama-3.2-1B 18.29 -> 54.35). The paper does not print the list: this is LLM2Vec's
# subset (3 retrieval, 2 reranking, 3 clustering, 1 pair classification, 3 classification, 3 STS),
# so a number from it is comparable in kind, not certified identical.
GEM_PAPER_15 = ("ArguAna", "SciFact", "NFCorpus", "SciDocsRR", "StackOverflowDupQuestions",
                "BiorxivClusteringS2S", "MedrxivClusteringS2S", "TwentyNewsgroupsClustering",
                "SprintDuplicateQuestions", "Banking77Classification", "EmotionClassification",
                "MassiveIntentClassification", "STS17", "SICK-R", "STSBenchmark")
NAMED_LISTS = {"gem-paper-15": GEM_PAPER_15, "local": TASK_NAMES, "local-wide": LOCAL_TASK_NAMES,
               "local-new": WIDE_TASK_NAMES}


def task_names(spec: str) -> tuple[str, ...]:
    """'A,B,gem-paper-15' -> the task names, named lists expanded, each checked against mteb's
    registry (offline); an unknown name is an error with mteb's suggestion."""
    names: list[str] = []
    for item in (s.strip() for s in spec.split(",")):
        if item:
            names += NAMED_LISTS.get(item, (item,))
    if not names:
        raise ValueError("--mteb needs task names (comma-separated), e.g. STSBenchmark, or a named list: "
                         + ", ".join(NAMED_LISTS))
    remote = [n for n in names if n not in LOCAL_TASK_NAMES]
    if remote:
        import mteb

        try:
            mteb.get_tasks(tasks=remote)
        except KeyError as e:
            raise ValueError(f"--mteb: {e.args[0] if e.args else e} (mteb's task names: `mteb.get_tasks()`; "
                             f"named lists: {', '.join(NAMED_LISTS)})") from None
    return tuple(dict.fromkeys(names))


def check_data(names) -> None:
    """Load every mteb task's data now (from the hub or its cache); offline, or with the hub out of
    reach, raise a RuntimeError naming the task, its dataset and the cause, before a model loads."""
    for task in remote_tasks(names):
        try:
            task.load_data()
        except Exception as e:  # ConnectionError, OfflineModeIsEnabled, HTTP errors: all mean "no data"
            offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False") or \
                os.environ.get("HF_DATASETS_OFFLINE", "0") not in ("0", "", "false", "False")
            cause = ("this process is offline (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set)" if offline
                     else f"the hub could not be reached ({type(e).__name__}: {str(e)[:160]})")
            raise RuntimeError(
                f"--mteb {task.metadata.name} needs its data ({task.metadata.dataset['path']}) from the Hugging Face "
                f"hub, and {cause}. Run it once online (mteb caches the data), or use the lab's local tasks "
                f"(leave out --mteb; they run offline)") from None

"""The embedding tasks, as real mteb tasks over local data (no hub access).

    task                     mteb type            main score (as MTEB defines it)
    LocalLee50STS            STS                  cosine_spearman
    LocalBBCClassification   Classification       accuracy (logistic regression, few shots per label)
    LocalBBCClustering       Clustering           v_measure (headlines, 5 topics; mean of 30 k-means draws)
    LocalBBCRetrieval        Retrieval            ndcg_at_10 (headline -> article)
    LocalBBCPairs            PairClassification   max_ap (is this the headline of this article?)

The wide suite adds two more kinds of text and task (`WIDE_TASK_NAMES`):

    LocalBBCArticleClustering  Clustering         v_measure (whole articles, 5 topics: long texts)
    LocalMMLUTopicClustering   Clustering         v_measure (exam questions, 57 subjects: another kind of text)

`build_tasks(size)` takes the row counts from a `TaskSizes` (the quick and full suites differ only
there). Articles are truncated by the embedder's max_length, not here.

Clustering is scored as mteb's legacy clustering scores it (one Mini-Batch k-means on the embeddings,
v-measure against the labels), but as the mean over `TaskSizes.kmeans_draws` fits (seeds 0, 1, ...)
on one embedding of the texts. mteb's single draw (seed 42) moves a headline clustering score by
about ±4.5 points (research/wide/results/clustering_seeds.md), more than close models differ by.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..corpora.eval_sets import read_eval

COMMON = dict(reference="https://github.com/gem-lab", dataset={"path": "local", "revision": "0"},
              category="t2t", eval_langs=["eng-Latn"], date=("2005-01-01", "2005-12-31"),
              dialect=["Written"], domains=["News"], task_subtypes=[], license="not specified",
              annotations_creators="human-annotated", modalities=["text"], sample_creation="found",
              bibtex_citation="")


@dataclass(frozen=True)
class TaskSizes:
    """How many rows each task uses; 0 = all."""

    classification_train: int = 0
    classification_test: int = 0
    clustering: int = 0
    retrieval_queries: int = 0
    pairs: int = 0
    samples_per_label: int = 16
    n_experiments: int = 5
    kmeans_draws: int = 30  # k-means fits averaged in each clustering score (seeds 0 .. kmeans_draws - 1)


WIDE = TaskSizes(classification_train=1000, classification_test=1225, clustering=0, retrieval_queries=1000,
                 pairs=0, n_experiments=5)  # every row the data has but the training half
QUICK = TaskSizes(classification_train=200, classification_test=200, clustering=600,
                  retrieval_queries=200, pairs=300, n_experiments=3)
FULL = TaskSizes(classification_train=1000, classification_test=1225, n_experiments=10)


def _take(rows: list, n: int) -> list:
    return rows[:n] if n else rows


def _dataset(rows):
    from datasets import Dataset

    return Dataset.from_list(rows) if isinstance(rows, list) else Dataset.from_dict(rows)


class _Local:
    """Mixin: a task whose data (`rows`) is handed over at construction, not downloaded."""

    def __init__(self, rows, **kw):
        super().__init__(**kw)
        self.rows = rows


def kmeans_v_measures(embeddings, labels: list, seeds) -> list[float]:
    """v-measure of mteb's clustering (Mini-Batch k-means, batch 500, n_init "auto", k = the number of
    labels) of `embeddings` (n, d) against `labels` (n), one fit per seed."""
    from sklearn.cluster import MiniBatchKMeans
    from sklearn.metrics import v_measure_score

    k = len(set(labels))
    return [float(v_measure_score(labels, MiniBatchKMeans(n_clusters=k, batch_size=500, n_init="auto",
                                                          random_state=seed).fit(embeddings).labels_))
            for seed in seeds]


class _MeanOfDraws:
    """Mixin for a legacy mteb clustering task (one set of texts): embed the texts once, score the mean
    v-measure of one k-means fit per seed in `kmeans_seeds` (main score `v_measure`; `v_measures`
    keeps each draw, `v_measure_std` their spread). With `kmeans_seeds = (42,)` it is mteb's own score."""

    kmeans_seeds: tuple = tuple(range(TaskSizes.kmeans_draws))  # build_tasks sets the suite's

    def _evaluate_subset(self, model, data_split, *, encode_kwargs, hf_split, hf_subset, timer,
                         num_proc=None, **kwargs):
        import numpy as np
        from datasets import Dataset
        from mteb._create_dataloaders import create_dataloader

        if len(data_split) != 1:
            raise ValueError(f"{self.metadata.name}: expected one set of texts to cluster, got {len(data_split)}")
        texts, labels = data_split[0][self.input_column_name], data_split[0][self.label_column_name]
        dataset = Dataset.from_dict({self.input_column_name: texts, self.label_column_name: labels})
        with timer("Encoding", split=hf_split, subset=hf_subset, log_message="Clustering: encoding texts"):
            loader = create_dataloader(dataset, task_metadata=self.metadata, input_column=self.input_column_name,
                                       num_proc=num_proc, **encode_kwargs)
            embeddings = model.encode(loader, task_metadata=self.metadata, hf_subset=hf_subset, hf_split=hf_split,
                                      **encode_kwargs)
        with timer("Scoring", split=hf_split, subset=hf_subset, log_message="Clustering: k-means draws"):
            scores = kmeans_v_measures(np.asarray(embeddings), labels, self.kmeans_seeds)
        return {"v_measure": float(np.mean(scores)), "v_measure_std": float(np.std(scores)), "v_measures": scores}


def _task_classes():
    """The five task classes (built lazily: importing mteb takes a few seconds)."""
    return _sentence_task_classes() + _article_task_classes()


def _sentence_task_classes():
    from datasets import DatasetDict
    from mteb.abstasks.classification import AbsTaskClassification
    from mteb.abstasks.clustering_legacy import AbsTaskClusteringLegacy
    from mteb.abstasks.sts import AbsTaskSTS
    from mteb.abstasks.task_metadata import TaskMetadata

    class LeeSTS(_Local, AbsTaskSTS):
        metadata = TaskMetadata(name="LocalLee50STS", description="Lee-50 news document similarity (1,225 pairs)",
                                type="STS", main_score="cosine_spearman", eval_splits=["test"], **COMMON)
        min_score, max_score = 0, 1

        def load_data(self, **kw):
            self.dataset = DatasetDict({"test": _dataset(self.rows)})
            self.data_loaded = True

    class BBCClassification(_Local, AbsTaskClassification):
        metadata = TaskMetadata(name="LocalBBCClassification", description="BBC News topic (5 classes)",
                                type="Classification", main_score="accuracy", eval_splits=["test"], **COMMON)

        def load_data(self, **kw):
            train, test = self.rows
            self.dataset = DatasetDict({"train": _dataset(train), "test": _dataset(test)})
            self.data_loaded = True

    class BBCClustering(_Local, _MeanOfDraws, AbsTaskClusteringLegacy):
        metadata = TaskMetadata(name="LocalBBCClustering", description="BBC headlines clustered by topic",
                                type="Clustering", main_score="v_measure", eval_splits=["test"], **COMMON)

        def load_data(self, **kw):
            sentences, labels = self.rows
            self.dataset = DatasetDict({"test": _dataset({"sentences": [sentences], "labels": [labels]})})
            self.data_loaded = True

    return LeeSTS, BBCClassification, BBCClustering


def _article_task_classes():
    from datasets import DatasetDict
    from mteb.abstasks.pair_classification import AbsTaskPairClassification
    from mteb.abstasks.retrieval import AbsTaskRetrieval
    from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData
    from mteb.abstasks.task_metadata import TaskMetadata

    class BBCRetrieval(_Local, AbsTaskRetrieval):
        metadata = TaskMetadata(name="LocalBBCRetrieval", description="BBC headline -> article",
                                type="Retrieval", main_score="ndcg_at_10", eval_splits=["test"], **COMMON)

        def load_data(self, **kw):
            queries, corpus, relevant = self.rows
            split = RetrievalSplitData(queries=_dataset(queries), corpus=_dataset(corpus),
                                       relevant_docs=relevant, top_ranked=None)
            self.dataset = {"default": {"test": split}}
            self.data_loaded = True

    class BBCPairs(_Local, AbsTaskPairClassification):
        metadata = TaskMetadata(name="LocalBBCPairs", description="Is this headline the article's own?",
                                type="PairClassification", main_score="max_ap", eval_splits=["test"], **COMMON)

        def load_data(self, **kw):
            self.dataset = DatasetDict({"test": _dataset(self.rows)})
            self.data_loaded = True

    return BBCRetrieval, BBCPairs


def _wide_task_classes():
    from datasets import DatasetDict
    from mteb.abstasks.clustering_legacy import AbsTaskClusteringLegacy
    from mteb.abstasks.task_metadata import TaskMetadata

    def clustering(name: str, description: str, domains: list[str]):
        class Clustering(_Local, _MeanOfDraws, AbsTaskClusteringLegacy):
            metadata = TaskMetadata(name=name, description=description, type="Clustering", main_score="v_measure",
                                    eval_splits=["test"], **{**COMMON, "domains": domains})

            def load_data(self, **kw):
                sentences, labels = self.rows
                self.dataset = DatasetDict({"test": _dataset({"sentences": [sentences], "labels": [labels]})})
                self.data_loaded = True
        return Clustering

    return (clustering("LocalBBCArticleClustering", "BBC articles clustered by topic", ["News"]),
            clustering("LocalMMLUTopicClustering", "MMLU questions clustered by subject", ["Academic"]))


TASK_NAMES = ("LocalLee50STS", "LocalBBCClassification", "LocalBBCClustering", "LocalBBCRetrieval", "LocalBBCPairs")
WIDE_TASK_NAMES = ("LocalBBCArticleClustering", "LocalMMLUTopicClustering")
LOCAL_TASK_NAMES = TASK_NAMES + WIDE_TASK_NAMES
LOCAL_CLUSTERING_TASKS = ("LocalBBCClustering", "LocalBBCArticleClustering", "LocalMMLUTopicClustering")
SHORT_NAMES = {"LocalLee50STS": "Lee50 STS", "LocalBBCClassification": "BBC cls",
               "LocalBBCClustering": "BBC clust", "LocalBBCRetrieval": "BBC retr", "LocalBBCPairs": "BBC pairs",
               "LocalBBCArticleClustering": "BBC article clust", "LocalMMLUTopicClustering": "MMLU subject clust"}
MMLU_TOPIC_QUESTIONS = 20  # per subject in the subject clustering (57 subjects: 1,140 questions)


def task_rows(sizes: TaskSizes, data_dir=None) -> dict[str, object]:
    """The rows of every task, from the built evaluation files."""
    bbc = read_eval("bbc.jsonl", data_dir)
    n_train = sizes.classification_train or len(bbc) // 2
    train = [{"text": r["text"], "label": r["label"]} for r in bbc[:n_train]]
    test = [{"text": r["text"], "label": r["label"]} for r in _take(bbc[n_train:], sizes.classification_test)]
    clus = _take(bbc, sizes.clustering)
    queries = _take(bbc, sizes.retrieval_queries)
    return {
        "LocalLee50STS": read_eval("lee_sts.jsonl", data_dir),
        "LocalBBCClassification": (train, test),
        "LocalBBCClustering": ([r["title"] for r in clus], [r["label"] for r in clus]),
        "LocalBBCRetrieval": (
            [{"id": f"q{i}", "text": r["title"]} for i, r in enumerate(queries)],
            [{"id": f"d{i}", "text": r["text"], "title": ""} for i, r in enumerate(queries)],
            {f"q{i}": {f"d{i}": 1} for i in range(len(queries))},
        ),
        "LocalBBCPairs": _take(read_eval("bbc_pairs.jsonl", data_dir), sizes.pairs),
        "LocalBBCArticleClustering": ([r["text"] for r in clus], [r["label"] for r in clus]),
        "LocalMMLUTopicClustering": _mmlu_topics(read_eval("mmlu.jsonl", data_dir), MMLU_TOPIC_QUESTIONS),
    }


def _mmlu_topics(rows: list[dict], per_topic: int) -> tuple[list[str], list[str]]:
    """(questions, subjects): the first `per_topic` questions of each subject (the file is shuffled)."""
    seen: dict[str, int] = {}
    texts, labels = [], []
    for r in rows:
        if seen.get(r["topic"], 0) < per_topic:
            seen[r["topic"]] = seen.get(r["topic"], 0) + 1
            texts.append(r["question"])
            labels.append(r["topic"])
    return texts, labels


def remote_tasks(names) -> list:
    """mteb task objects (English subsets) for the names that are not the lab's local tasks."""
    remote = [n for n in names if n not in LOCAL_TASK_NAMES]
    if not remote:
        return []
    import mteb

    by_name = {t.metadata.name: t for t in mteb.get_tasks(tasks=remote, languages=["eng"])}
    return [by_name[n] for n in remote if n in by_name]


def build_tasks(sizes: TaskSizes, rows: dict | None = None, names=TASK_NAMES, data_dir=None) -> list:
    """mteb task objects for `names`: the local ones filled with `rows` (default: the built
    evaluation data), any other name one of mteb's own tasks (`lab.evaluation.mteb_by_name`)."""
    local = [n for n in names if n in LOCAL_TASK_NAMES]
    rows = rows if rows is not None or not local else task_rows(sizes, data_dir)
    classes = dict(zip(LOCAL_TASK_NAMES, _task_classes() + _wide_task_classes()))
    remote = {t.metadata.name: t for t in remote_tasks(names)}
    tasks = []
    for name in names:
        if name not in LOCAL_TASK_NAMES:
            tasks.append(remote[name])
            continue
        task = classes[name](rows[name])
        if name == "LocalBBCClassification":
            task.samples_per_label, task.n_experiments = sizes.samples_per_label, sizes.n_experiments
        if isinstance(task, _MeanOfDraws):
            task.kmeans_seeds = tuple(range(sizes.kmeans_draws))
        tasks.append(task)
    return tasks


def run_tasks(embedder, tasks: list, batch_size: int = 32) -> dict[str, float]:
    """{task name: main score in [0, 1]} for one Embedder, through `mteb.evaluate`."""
    import mteb

    from .embedders import MtebEncoder

    result = mteb.evaluate(MtebEncoder(embedder), tasks, cache=None, show_progress_bar=False,
                           encode_kwargs={"batch_size": batch_size})
    return {tr.task_name: float(tr.get_score()) for tr in result.task_results}


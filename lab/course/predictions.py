"""Predictions, written down before the reveal: `course.predict("4.a", "GEM's map")` records one.

Each notebook asks "Predict, then run." before a result; the cell under the question records the
learner's answer (atomically, in the lab's cache folder: `predictions.json`), so the recap - or the
teacher - can set it beside what happened. An empty answer records nothing and says so.
"""

from __future__ import annotations

import time

from ..storage import cache_dir, read_json, write_json_atomic

FILE = "predictions.json"


def predictions() -> dict[str, dict]:
    """{key: {"answer", "time"}} of every prediction recorded on this machine (the last one per key)."""
    path = cache_dir() / FILE
    return read_json(path) if path.is_file() else {}


def predict(key: str, answer: str) -> bool:
    """Record `answer` as the prediction for `key` (e.g. "6.4"); True once recorded."""
    answer = (answer or "").strip()
    if not answer:
        print(f"… write your prediction for {key} between the quotes, then run this cell (before the next one)")
        return False
    recorded = predictions()
    recorded[key] = {"answer": answer, "time": time.strftime("%Y-%m-%d %H:%M:%S")}
    path = cache_dir() / FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, recorded)
    print(f"recorded your prediction for {key}: {answer!r}")
    return True

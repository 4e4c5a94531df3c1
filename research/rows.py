"""Per-model result rows that are measured once: a study's JSON file keeps each model's row with the
fingerprint of its weights, and a rerun measures only the models whose weights changed (or all of
them when the study's settings changed). Saved after every row, atomically: a stopped study resumes."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable

from lab.storage import write_json_atomic

log = logging.getLogger(__name__)


def rows_per_weights(target: Path, settings: dict, models: dict[str, str], measure: Callable[[str], dict],
                     what: str = "row") -> dict:
    """{"settings", "rows": {label: {"model", "fingerprint", **measure(model)}}} for `models` ({label:
    model name or folder}), in their order; rows of other labels are dropped from the file."""
    from lab.weights.loading import weights_fingerprint

    result = json.loads(target.read_text()) if target.is_file() else {}
    if result.get("settings") != settings:
        result = {"settings": settings, "rows": {}}
    for label, model in models.items():
        fingerprint = weights_fingerprint(model)
        if result["rows"].get(label, {}).get("fingerprint") == fingerprint:
            continue
        log.info("%s: %s", what, label)
        result["rows"][label] = {"model": model, "fingerprint": fingerprint, **measure(model)}
        write_json_atomic(target, result)
    result["rows"] = {label: result["rows"][label] for label in models}
    write_json_atomic(target, result)
    return result


def study_main(doc: str, argv: list[str] | None, measure_and_report: Callable[[], str]) -> int:
    """A per-model study's command line (no options; `doc`'s first paragraph as its help): log at INFO,
    measure what changed, print the report."""
    import argparse

    argparse.ArgumentParser(description=doc.split("\n\n")[0]).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    print(measure_and_report())
    return 0

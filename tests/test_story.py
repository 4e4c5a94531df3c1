"""The course, the app and the guide describe the model that ships: its k and its sink.

Read from checkpoints/gem-smollm2-135m/gem_config.json at test time, so that a change to what ships
fails here until every text that teaches it changes too."""

import json
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = json.loads((ROOT / "checkpoints" / "gem-smollm2-135m" / "gem_config.json").read_text())
NUMBER_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8}


def _texts() -> dict[str, str]:
    """{where: text} for every notebook cell, the guide, the README and the app's modules."""
    out = {}
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for i, cell in enumerate(nbformat.read(path, as_version=4).cells):
            out[f"{path.name} cell {i}"] = cell.source
    for path in [ROOT / "docs" / "workshop.md", ROOT / "README.md", *sorted((ROOT / "lab" / "app").glob("*.py"))]:
        out[str(path.relative_to(ROOT))] = path.read_text()
    return out


def _sentences(text: str) -> list[str]:
    return re.split(r"(?<=[.!?])\s+|\n\s*[-*] ", text)


def test_no_drawing_fixes_a_k_of_its_own():
    """Attention views and app defaults use the model's own k (all of its GEM tokens), never a literal."""
    fixed = {where: m.group(0) for where, text in _texts().items()
             for m in re.finditer(r"\.attention\([^)]*\bk\s*=\s*[1-9]", text)}
    assert not fixed, f"drawn with a k of its own instead of the model's: {fixed}"


def test_every_count_of_the_shipped_models_tokens_is_its_k():
    k = SHIPPED["k"]
    wrong = []
    for where, text in _texts().items():
        for sentence in _sentences(text):
            for m in re.finditer(r"\b(one|two|three|four|five|six|seven|eight|\d+) GEM tokens?\b", sentence):
                n = int(m.group(1)) if m.group(1).isdigit() else NUMBER_WORDS[m.group(1)]
                if n != k and not re.search(r"CPU recipe|ablation|k = 1 model|= ?1\b", sentence):
                    wrong.append((where, sentence.strip()[:120]))
            if "shipped" in sentence:
                for m in re.finditer(r"\bk ?= ?(\d+)", sentence):
                    other = re.search(r"CPU recipe|ablation|a k ?= ?\d+ GEM model", sentence)  # another model, named as such
                    if int(m.group(1)) != k and not other:
                        wrong.append((where, sentence.strip()[:120]))
    assert not wrong, f"the shipped model has k = {k}; these say otherwise: {wrong}"


def test_every_sink_named_is_the_shipped_sink():
    sink = SHIPPED["sink_token"]
    wrong = [(where, m.group(0)) for where, text in _texts().items() for sentence in _sentences(text)
             if "sink" in sentence for m in re.finditer(r"<\|[a-z_]+\|>", sentence)
             if m.group(0) != sink and not m.group(0).startswith("<|gem_")]
    assert not wrong, f"the shipped model's sink is {sink}; these name another: {wrong}"


@pytest.mark.parametrize("stale", [r"k\s*=\s*1\b.{0,40}shipped", r"cannot reconstruct", r"reads one vector at (S|the special token)",
                                   r"\ba special token\b"])
def test_no_stale_description_of_the_shipped_model(stale):
    found = [(where, m.group(0)) for where, text in _texts().items() for m in re.finditer(stale, text)]
    assert not found, f"stale description of the shipped model: {found}"

"""Every notebook runs top to bottom (QUICK = True: tiny models, seconds) and fails on any error;
every exercise's check refuses its untouched template and accepts its solution, in the same run."""

import re

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from lab.course.exercise_cells import exercise_pairs, verdicts, with_solution_cells

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_there_are_six_notebooks_that_teach():
    assert len(NOTEBOOKS) == 6
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(params) == 1 and "QUICK = False" in params[0].source, path.name
        assert "**You will:**" in nb.cells[0].source and "**Time:**" in nb.cells[0].source, path.name
        assert "{{" not in nb.cells[0].source, f"{path.name}: the measured time is filled in"
        assert any(c.source.startswith("## Exercises") for c in nb.cells), f"{path.name} has exercises"
        assert any("<summary>Solution</summary>" in c.source for c in nb.cells), f"{path.name} has solutions"
        assert any(c.source.startswith("**Predict, then run.**") for c in nb.cells), path.name
        assert nb.cells[-1].source.startswith("## Recap"), f"{path.name} ends with a recap"
        assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), f"{path.name}: clear outputs"
        assert any("import lab" in c.source or "from lab" in c.source for c in nb.cells)
        tasks = [c for c in nb.cells if c.cell_type == "markdown" and re.match(r"\*\*\d\.\d\*\*", c.source)]
        pairs = exercise_pairs(nb.cells)
        assert len(pairs) == len(tasks), f"{path.name}: every exercise's code cell is tagged 'exercise'"
        assert all(code for _, code in pairs), f"{path.name}: every exercise has a ```python solution (the solved cell)"


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    """One cache for all notebooks: the tiny GEM checkpoint is trained once, UMAP compiled once."""
    return str(tmp_path_factory.mktemp("notebook-cache"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_in_quick_mode(path, shared_cache, monkeypatch):
    monkeypatch.setenv("GEM_LAB_CACHE", shared_cache)
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if "parameters" in cell.metadata.get("tags", []):
            cell.source = "QUICK = True"
    placed = with_solution_cells(nb)  # each solution runs right after its untouched template
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    # execute() raises on the first failing cell; also check that every code cell ran, in order,
    # and that the notebook showed something (a run that silently skipped cells would not)
    counts = [c.execution_count for c in nb.cells if c.cell_type == "code"]
    assert counts == list(range(1, len(counts) + 1)), f"cells not all executed in order: {counts}"
    assert sum(len(c.get("outputs", [])) for c in nb.cells if c.cell_type == "code") >= 3
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "IProgress not found" not in text, "ipywidgets is installed: progress bars draw as widgets"
    for t, sol in placed:
        refused, accepted = verdicts(nb.cells[t], nb.cells[sol])
        name = nb.cells[t - 1].source.split("**")[1] if nb.cells[t - 1].source.startswith("**") else t
        assert refused, f"exercise {name}: its check accepts the untouched template"
        assert accepted, f"exercise {name}: its check refuses the solution: {nb.cells[sol].get('outputs')}"

"""The notebooks' exercises as (template, solution) pairs, so that every one can be checked both ways.

An exercise is a code cell tagged `exercise` (what the learner edits: it calls a check from
`lab.course.exercises` with the notebook's placeholder `None` or an unfinished function), followed by
a markdown cell with a collapsed solution whose first ```python block is the whole cell, solved:

    **1.5** Build the GEM mask ...                          (markdown: the task)
    def my_gem_mask(roles, ...): ...  # your turn            (code, tag "exercise": the template)
    ex.check_gem_mask(my_gem_mask)
    <details><summary>Solution</summary> ```python ... ``` (markdown: the solved cell, then why)

The template must make its check say "not yet" (✗) or "your turn"; the solution must make it say ✓.
`with_solution_cells` adds each solution after its template, for the test that runs both.
"""

from __future__ import annotations

import re

EXERCISE_TAG = "exercise"
SOLUTION_TAG = "solution-check"
_FENCE = re.compile(r"```python\n(.*?)```", re.S)


def solution_code(markdown: str) -> str | None:
    """The first ```python block of a collapsed solution, or None when `markdown` is not one."""
    if "<summary>Solution</summary>" not in markdown:
        return None
    found = _FENCE.search(markdown)
    return found.group(1).rstrip() + "\n" if found else None


def exercise_pairs(cells: list) -> list[tuple[int, str | None]]:
    """[(index of an exercise cell, the source of its solved cell or None)] in notebook order; a
    template's solution is the next solution markdown before the next exercise."""
    pairs = []
    for i, cell in enumerate(cells):
        if cell.cell_type != "code" or EXERCISE_TAG not in cell.metadata.get("tags", []):
            continue
        solved = None
        for later in cells[i + 1:]:
            if later.cell_type == "code" and EXERCISE_TAG in later.metadata.get("tags", []):
                break
            if later.cell_type == "markdown" and (solved := solution_code(later.source)) is not None:
                break
        pairs.append((i, solved))
    return pairs


def with_solution_cells(nb) -> list[tuple[int, int]]:
    """Insert each exercise's solved cell right after its template (tagged `solution-check`), in place;
    returns [(template index, solution index)] in the new notebook. A missing solution raises."""
    import nbformat

    pairs = exercise_pairs(nb.cells)
    missing = [nb.cells[i].source.splitlines()[0] for i, code in pairs if code is None]
    if missing:
        raise ValueError(f"exercises without a ```python solution block: {missing}")
    placed = []
    for shift, (i, code) in enumerate(pairs):
        at = i + shift
        nb.cells.insert(at + 1, nbformat.v4.new_code_cell(code, metadata={"tags": [SOLUTION_TAG]}))
        placed.append((at, at + 1))
    return placed


def cell_text(cell) -> str:
    """Everything a cell printed (streams and text results)."""
    parts = []
    for out in cell.get("outputs", []):
        parts.append(out.get("text", ""))
        parts.append(out.get("data", {}).get("text/plain", ""))
    return "".join(parts)


def verdicts(template_cell, solution_cell) -> tuple[bool, bool]:
    """(the template was refused, the solution was accepted), read from what the checks printed."""
    said, solved = cell_text(template_cell), cell_text(solution_cell)
    refused = "✓" not in said and ("✗" in said or "your turn" in said)
    accepted = "✓" in solved and "✗" not in solved and "your turn" not in solved
    return refused, accepted

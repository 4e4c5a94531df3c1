"""The package shows its layers: a lower layer never imports a higher one, no import cycle among
lab modules (function-level imports included), no private member used across modules, and
files and functions small enough to read. Everything is read with `ast`; nothing is imported."""

import ast
from pathlib import Path

import pytest

LAB = Path(__file__).resolve().parents[1] / "lab"

# Rank of each top-level part of lab: an import may only go to an equal-or-lower rank, and parts
# of equal rank (evaluation / training, app / course) never import each other.
LAYERS = {"storage": 0, "gem": 1, "weights": 2, "corpora": 3, "evaluation": 4, "training": 4, "viz": 5,
          "app": 6, "course": 6, "check": 6, "serve": 6, "cli": 7, "__main__": 8, "": 8}
# Private attributes of third-party objects the lab must touch (transformers' config attribute).
THIRD_PARTY_PRIVATE = {"_attn_implementation"}
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60


def module_name(path: Path) -> str:
    parts = ["lab", *path.relative_to(LAB).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(LAB.rglob("*.py"))}


def part_of(module: str) -> str:
    """The top-level part of lab a module belongs to ("" for the package root)."""
    return module.split(".")[1] if module.count(".") else ""


def imported_modules(module: str, path: Path) -> set[str]:
    """The lab modules `module` imports anywhere in its file (top level or inside functions)."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "lab"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "lab":
                continue
            for alias in node.names:  # `from .pkg import module` imports that module
                sub = f"{target}.{alias.name}"
                out.add(sub if sub in MODULES else target)
    return {m for m in out if m in MODULES and m != module}


GRAPH = {m: imported_modules(m, p) for m, p in MODULES.items()}


def test_every_module_belongs_to_a_layer():
    assert {part_of(m) for m in MODULES} <= set(LAYERS), sorted({part_of(m) for m in MODULES} - set(LAYERS))


def test_the_layer_rule_itself_is_checked():
    """A made-up import upward is caught (the check can fail)."""
    assert not _allowed("lab.gem.model", "lab.weights.loading")
    assert not _allowed("lab.training.loop", "lab.evaluation.quick")
    assert _allowed("lab.weights.loading", "lab.gem.model") and _allowed("lab.gem.model", "lab.gem.masks")


def _allowed(src: str, dst: str) -> bool:
    a, b = part_of(src), part_of(dst)
    return a == b or LAYERS[b] < LAYERS[a]


def test_no_import_goes_up_a_layer():
    bad = [f"{src} -> {dst}" for src, dsts in GRAPH.items() for dst in sorted(dsts) if not _allowed(src, dst)]
    assert not bad, "imports against the layer rule:\n" + "\n".join(bad)


def _cycle() -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str):
        state[m] = 1
        stack.append(m)
        for n in sorted(GRAPH[m]):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (found := visit(n)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(GRAPH):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_no_import_cycle_among_lab_modules():
    cycle = _cycle()
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_files_and_functions_stay_small():
    long_files = [f"{m}: {n}" for m, p in MODULES.items() if (n := len(p.read_text().splitlines())) > MAX_FILE_LINES]
    long_functions = []
    for m, p in MODULES.items():
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long_functions.append(f"{m}.{node.name}: {n} lines")
    assert not long_files, f"modules over {MAX_FILE_LINES} lines: {long_files}"
    assert not long_functions, f"functions over {MAX_FUNCTION_LINES} lines: {long_functions}"


def _private_names(tree: ast.AST) -> set[str]:
    """Names a module defines with one leading underscore (functions, classes, globals, attributes)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            out.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            out.add(node.attr)
    return {n for n in out if n.startswith("_") and not n.startswith("__")}


def test_no_private_member_is_used_from_another_module():
    trees = {m: ast.parse(p.read_text()) for m, p in MODULES.items()}
    defined = {m: _private_names(t) for m, t in trees.items()}
    lab_private = set().union(*defined.values()) - THIRD_PARTY_PRIVATE
    bad = []
    for m, tree in trees.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("lab")):
                bad += [f"{m} imports {a.name}" for a in node.names if a.name.startswith("_")]
            if (isinstance(node, ast.Attribute) and node.attr in lab_private and node.attr not in defined[m]
                    and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))):
                bad.append(f"{m} uses .{node.attr} (line {node.lineno})")
    assert not bad, "private members used across modules:\n" + "\n".join(bad)


@pytest.mark.parametrize("module", ["lab.gem.model", "lab.training.loop", "lab.weights.loading"])
def test_the_graph_sees_function_level_imports(module):
    """The graph is not empty for modules known to import others (a parser bug would hide edges)."""
    assert GRAPH[module]


RESEARCH = LAB.parent / "research"


def _top_level_imports(path: Path) -> set[str]:
    """The top-level package of every absolute import in a file (function-level imports included)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level:
            out.add((node.module or "").split(".")[0])
    return out


def test_lab_never_imports_research_and_research_builds_on_lab():
    """The product does not depend on the studies that chose its recipe; the studies use the product."""
    into_research = [m for m, p in MODULES.items() if "research" in _top_level_imports(p)]
    assert not into_research, f"lab modules importing research: {into_research}"
    studies = sorted(RESEARCH.rglob("*.py"))
    assert studies and any("lab" in _top_level_imports(p) for p in studies)
    assert not (LAB / "experiments").exists(), "studies live in research/, not in the package"


def test_the_research_folder_says_what_each_study_asked_found_and_how_to_rerun():
    readme = (RESEARCH / "README.md").read_text()
    for study in ("ablations", "reconstruction", "sink_words", "gpu_runs", "reader"):
        assert (RESEARCH / study).exists() or (RESEARCH / f"{study}.py").exists(), study
        assert study.replace("_", " ").split()[0] in readme.lower(), study
    assert "| study | asked | found | rerun |" in readme


def test_every_promise_names_a_test_that_exists():
    """docs/promises.md: each `file.py::test_name` it cites is a test in tests/."""
    import re

    root = Path(__file__).resolve().parents[1]
    cited = re.findall(r"`(test_\w+\.py)::(test_\w+)`", (root / "docs" / "promises.md").read_text())
    assert len(cited) >= 25
    for file, name in cited:
        source = (root / "tests" / file).read_text()
        assert re.search(rf"^def {name}\(", source, re.M), f"docs/promises.md cites {file}::{name}, which does not exist"

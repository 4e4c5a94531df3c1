"""Run the six notebooks in full mode, time each, and keep executed copies to read without running.

    python -m lab.course.render [--out docs/notebooks] [--quick]      # make docs-notebooks

The source notebooks stay output-free; the executed copies (figures stored as plotly JSON, which
JupyterLab, VS Code and nbviewer draw) and `timings.json` are written atomically to `--out`:
{"notebooks": {stem: {seconds, cpu (its model name), cores, native_bf16 (then training runs in bf16,
faster than on an AVX2-only CPU)}}, "probe": `lab.weights.probe.speed_probe()` of the same machine},
which `make check` scales to a learner's machine. The notebooks' headers and docs/workshop.md quote
these times and name the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from ..weights.dtypes import cpu_has_fast_bf16, cpu_model
from ..weights.probe import speed_probe
from ..storage import PROJECT_ROOT, atomic_file, write_json_atomic

NOTEBOOKS = PROJECT_ROOT / "notebooks"


def execute(path: Path, quick: bool, timeout: int = 1800):
    """(executed notebook, seconds): `path` run top to bottom from notebooks/, QUICK set as asked."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if "parameters" in cell.metadata.get("tags", []):
            cell.source = f"QUICK = {quick}"
    os.environ.setdefault("PLOTLY_RENDERER", "plotly_mimetype")  # figures as JSON, no embedded plotly.js
    t = time.perf_counter()
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    return nb, time.perf_counter() - t


def main(argv=None) -> None:
    import nbformat

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(PROJECT_ROOT / "docs" / "notebooks"))
    p.add_argument("--quick", action="store_true", help="QUICK mode (tiny models): checks the wiring in seconds")
    p.add_argument("names", nargs="*", help="notebook stems (default: all six)")
    args = p.parse_args(argv)
    out = Path(args.out)
    paths = sorted(NOTEBOOKS.glob("*.ipynb"))
    paths = [q for q in paths if not args.names or q.stem in args.names]
    timings_file = out / "timings.json"
    timings = json.loads(timings_file.read_text()) if timings_file.is_file() else {}
    if "notebooks" not in timings:  # the layout before the probe: {stem: row}
        timings = {"notebooks": timings}
    if not args.quick:
        timings["probe"] = speed_probe()  # this machine's speed, to scale the times elsewhere (make check)
    for path in paths:
        print(f"running {path.name} ({'QUICK' if args.quick else 'full'} mode) ...", flush=True)
        nb, seconds = execute(path, args.quick)
        with atomic_file(out / path.name, "w", encoding="utf-8") as f:
            nbformat.write(nb, f)
        timings.setdefault("notebooks", {})[path.stem] = {"seconds": round(seconds, 1), "quick": args.quick, "cpu": cpu_model(), "cores": os.cpu_count(),
                              "native_bf16": cpu_has_fast_bf16()}  # then training cells run in bf16, faster
        write_json_atomic(timings_file, timings)
        print(f"  {seconds:.0f} s", flush=True)


if __name__ == "__main__":
    main()

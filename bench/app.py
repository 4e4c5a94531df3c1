"""The app's speed goals: start-up with cached models (target <= 10 s) and the UMAP maps of 500 texts
for both models (target <= 30 s cold, a file read when cached by the text set's hash).

    python -m bench.app [--base smollm2-135m] [--gem gem-smollm2-135m]

Start-up is what `python app.py` does before serving: load both models (conversion cached) and
build the Blocks. The map is cold (an empty map cache; numba's JIT cache may be warm, as on any
second start), then warm.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from lab.weights import DEFAULT_GEM, DEFAULT_MODEL


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--base", default=DEFAULT_MODEL)
    p.add_argument("--gem", default=DEFAULT_GEM)
    args = p.parse_args()
    from lab.app import handlers as h
    from lab.app.ui import build_demo
    from lab.viz.maps import warm_up

    t = time.perf_counter()
    session = h.Session(args.base, args.gem)
    session.models()
    build_demo(session)
    startup = time.perf_counter() - t
    warm_up()  # as app.py does in the background while the page loads
    with tempfile.TemporaryDirectory() as tmp:
        from lab.viz import maps

        real = maps.cache_dir
        maps.cache_dir = lambda: Path(tmp)  # an empty map cache for the cold run
        try:
            t = time.perf_counter()
            h.embeddings_view(session, "bundled", set_name="BBC headlines (500, 5 topics)")
            cold = time.perf_counter() - t
            t = time.perf_counter()
            h.embeddings_view(session, "bundled", set_name="BBC headlines (500, 5 topics)")
            warm = time.perf_counter() - t
        finally:
            maps.cache_dir = real
    print(f"start-up with cached models: {startup:.1f} s (target <= 10 s)")
    print(f"500-text maps, both models: cold {cold:.1f} s (target <= 30 s), cached {warm:.2f} s "
          f"(cold/cached = {cold / warm:.0f}x)")


if __name__ == "__main__":
    main()

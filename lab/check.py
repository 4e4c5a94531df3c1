"""Is this machine ready for the workshop? `make check` / `python -m lab check`: under a minute once
the default maps are cached (the first run draws them, ~2 min).

Each check returns a `Check`: what was checked, whether it passed, what was seen, and — when it
failed — the one thing to do about it. Checks run in order; a failed check does not stop the rest,
except that model checks are skipped while the model cannot be loaded.
"""

from __future__ import annotations

import importlib
import shutil
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .storage import PROJECT_ROOT, cache_dir

MIN_FREE_GIB = 2.0
# a notebook kernel holds the base and the GEM model in fp32 (~1.5 GB), the app as much again
MIN_AVAILABLE_RAM_GIB = 4.0
PACKAGES = ("torch", "transformers", "peft", "gradio", "umap", "plotly", "mteb", "nbclient")


@dataclass
class Check:
    name: str
    ok: bool
    seen: str
    fix: str = ""

    def line(self) -> str:
        mark = "ok  " if self.ok else "FAIL"
        out = f"[{mark}] {self.name}: {self.seen}"
        return out if self.ok else f"{out}\n       -> {self.fix}"


def check_python() -> Check:
    v = sys.version_info
    return Check("python", v >= (3, 11), f"{v.major}.{v.minor}.{v.micro} at {sys.executable}",
                 "install Python 3.11 or newer, then `make clean-venv && make demo`")


def check_packages() -> Check:
    missing = []
    for name in PACKAGES:
        try:
            importlib.import_module(name)
        except Exception as e:  # an import can fail in many ways (missing, broken wheel)
            missing.append(f"{name} ({type(e).__name__})")
    import torch

    seen = f"torch {torch.__version__} ({'CUDA' if torch.cuda.is_available() else 'CPU'}), " + (
        f"missing: {', '.join(missing)}" if missing else f"{len(PACKAGES)} packages import")
    return Check("packages", not missing, seen, "reinstall: `rm .venv/.installed && make install`")


def check_data() -> Check:
    corpus = PROJECT_ROOT / "data" / "build" / "wiki" / "train.jsonl"
    lee = PROJECT_ROOT / "data" / "build" / "eval" / "lee_sts.jsonl"
    ok = corpus.is_file() and lee.is_file()
    return Check("data", ok, "training corpus and evaluation sets built" if ok else f"{corpus} or {lee} missing",
                 "build them (30 s, offline): `make data`")


def check_disk() -> Check:
    free = shutil.disk_usage(cache_dir() if cache_dir().exists() else Path.home()).free / 2**30
    return Check("disk", free >= MIN_FREE_GIB, f"{free:.1f} GiB free for {cache_dir()}",
                 f"free at least {MIN_FREE_GIB:.0f} GiB, or point GEM_LAB_CACHE at a bigger disk")


def available_ram_gib() -> float | None:
    """Memory available to new processes (GiB), or None where it cannot be read."""
    try:
        import psutil

        return psutil.virtual_memory().available / 2**30
    except ImportError:
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def check_memory() -> Check:
    free = available_ram_gib()
    if free is None:
        return Check("memory", True, "available memory could not be read on this system")
    return Check("memory", free >= MIN_AVAILABLE_RAM_GIB, f"{free:.1f} GiB available",
                 f"close programs (and notebook kernels: each holds two models, ~1.5 GB) until "
                 f"{MIN_AVAILABLE_RAM_GIB:.0f} GiB are free")


def check_maps_warm() -> Check:
    """Compile UMAP's kernels now (cached on disk), so the first map in class is not a silent wait."""
    from .viz.maps import warm_up

    t = time.perf_counter()
    try:
        warm_up()
    except Exception as e:
        return Check("maps", False, f"UMAP failed: {type(e).__name__}: {e}",
                     "reinstall: `rm .venv/.installed && make install`")
    return Check("maps", True, f"UMAP compiled and cached in {time.perf_counter() - t:.1f} s")


def check_default_maps(gem, base=None, textset=None) -> Check:
    """Draw (once) and cache the maps notebook 4 and the app open with: base mean pooling, the GEM
    model and MiniLM on the default text set (~2 min the first time, then instant). `base` and
    `textset` default to the default model and the first bundled set."""
    from .corpora.textsets import bundled_sets, load_bundled
    from .viz.maps import embedding_map, encoder_map
    from .weights import load
    from .weights.registry import DEFAULT_MODEL

    t = time.perf_counter()
    name = bundled_sets()[0] if textset is None else "the given texts"
    try:
        texts = load_bundled(name) if textset is None else textset
        embedding_map(base if base is not None else load(DEFAULT_MODEL), texts, "mean")
        embedding_map(gem, texts, "gem")
        encoder_map("minilm", texts)
    except Exception as e:
        return Check("default maps", False, f"{type(e).__name__}: {e}", "run `make data`, then `make check` again")
    return Check("default maps", True, f"{name}: base, GEM and MiniLM maps cached ({time.perf_counter() - t:.0f} s)")


def check_expected_times(slower_than: float = 2.0) -> Check:
    """This machine's notebook times, from a short probe scaled against the machine that measured them."""
    import json

    from .weights.probe import expected_seconds, speed_probe

    path = PROJECT_ROOT / "docs" / "notebooks" / "timings.json"
    timings = json.loads(path.read_text()) if path.is_file() else {}
    if "probe" not in timings:
        return Check("expected times", True, f"no probe recorded in {path} (run `make docs-notebooks` once)")
    here, there = speed_probe(), timings["probe"]
    ratio = here["seconds"] / there["seconds"]
    times = expected_seconds(timings["notebooks"], there, here)
    listing = ", ".join(f"{name[:2]} {_duration(s)}" for name, s in sorted(times.items()))
    seen = (f"notebooks here ≈ {listing} ({ratio:.1f}× the times measured on {there['cpu']}, "
            f"{here['cpu']} here)")
    return Check("expected times", ratio <= slower_than, seen,
                 f"this machine is {ratio:.1f}× slower than the one the plan was timed on: set QUICK = True in "
                 "notebooks 3 and 5, read their executed copies (docs/notebooks/), or pair with a faster machine")


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def check_default_model() -> Check:
    from .weights.conversion import cache_problem
    from .weights.registry import DEFAULT_MODEL, get_spec

    problem = cache_problem(get_spec(DEFAULT_MODEL))
    return Check("default model", problem is None,
                 f"{DEFAULT_MODEL} converted and cached" if problem is None else problem,
                 f"convert it once (~30 s, offline): `.venv/bin/python -m lab convert {DEFAULT_MODEL}` "
                 f"(make demo does it too)")


def check_models_run() -> list[Check]:
    """Load the shipped GEM model, embed one text, generate a few tokens (timed)."""
    from .weights import DEFAULT_GEM, load

    t = time.perf_counter()
    try:
        gem = load(DEFAULT_GEM)
    except Exception as e:
        return [Check("GEM model", False, f"{type(e).__name__}: {e}",
                      "restore the shipped checkpoint: `git checkout -- checkpoints`")]
    loaded = time.perf_counter() - t
    t = time.perf_counter()
    emb = gem.encode("A short test sentence about the weather.")
    encoded = time.perf_counter() - t
    t = time.perf_counter()
    text = gem.generate("The capital of France is", max_new_tokens=8)
    generated = time.perf_counter() - t
    return [Check("GEM model", True, f"{DEFAULT_GEM} loaded in {loaded:.1f} s"), check_default_maps(gem),
            Check("encode", emb.shape == (gem.embedding_dim(),), f"{emb.shape[0]}-d embedding in {encoded:.2f} s",
                  "report this: the model loaded but does not embed"),
            Check("generate", bool(text.strip()), f"{text.strip()!r} in {generated:.2f} s",
                  "report this: the model loaded but does not generate")]


def check_port(port: int = 7860, host: str = "127.0.0.1") -> Check:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
            free = True
        except OSError:
            free = False
    return Check("app port", free, f"{host}:{port} is {'free' if free else 'in use'}",
                 f"stop the other program on port {port} (an app already running?), or start the app "
                 f"on another port: `python app.py --port {port + 1}`")


def run_checks(port: int = 7860) -> list[Check]:
    checks = [check_python(), check_packages(), check_data(), check_disk(), check_memory(), check_maps_warm(),
              check_default_model()]
    if checks[-1].ok:
        checks += check_models_run()
        checks.append(check_expected_times())
    checks.append(check_port(port))
    return checks


def report(checks: list[Check], seconds: float) -> str:
    failed = [c for c in checks if not c.ok]
    verdict = ("READY: this machine can run the notebooks and the app." if not failed else
               f"NOT READY: {len(failed)} check(s) failed; do what the arrows say, then run `make check` again.")
    return "\n".join([c.line() for c in checks] + [f"({seconds:.0f} s) {verdict}"])

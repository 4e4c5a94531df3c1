"""Run every benchmark in turn: `make bench` / `python -m bench`."""

import subprocess
import sys

for module in ("bench.encode", "bench.embed_generate", "bench.dtype_agreement", "bench.train_step", "bench.flex", "bench.app"):
    print(f"== {module}", flush=True)
    subprocess.run([sys.executable, "-m", module], check=True)

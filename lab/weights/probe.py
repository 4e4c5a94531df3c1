"""How fast is this machine for the lab's work? One short, fixed measurement to scale measured times.

`speed_probe()` times a training step of the default model (forward + backward, a (4, 128) batch,
fp32, the median of three after a warm-up: about 5 s on a 2-core CPU). `make docs-notebooks` records
it beside the notebooks' measured times (`docs/notebooks/timings.json`); `make check` runs it again
and scales those times to this machine: expected = measured x (probe here / probe there).
"""

from __future__ import annotations

import statistics
import time

import torch

from .dtypes import cpu_has_fast_bf16, cpu_model


def speed_probe(repeats: int = 3, model: str | None = None) -> dict:
    """{"seconds": median seconds of one probe step, "cpu", "threads", "native_bf16"}; `model`: the
    default model unless given (tests use a tiny one)."""
    from .loading import load
    from .registry import DEFAULT_MODEL

    gem = load(model or DEFAULT_MODEL, dtype="float32", device="cpu")
    ids = torch.randint(100, gem.tokenizer.vocab_size - 1, (4, 128), generator=torch.Generator().manual_seed(0))
    model = gem.model

    def step():
        out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        model.zero_grad(set_to_none=True)

    step()  # warm-up: allocations, kernels chosen
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return {"seconds": round(statistics.median(times), 3), "cpu": cpu_model(), "threads": torch.get_num_threads(),
            "native_bf16": cpu_has_fast_bf16()}


def expected_seconds(measured: dict, probe_there: dict, probe_here: dict) -> dict[str, float]:
    """{notebook: seconds expected here}: each measured time scaled by the ratio of the two probes."""
    ratio = probe_here["seconds"] / probe_there["seconds"]
    return {name: row["seconds"] * ratio for name, row in measured.items()}

"""The reconstruction reader: a small LoRA that is on only while decoding from the GEM tokens' cache.

GEM trains one set of weights to embed (the S state) and to read a text back out of S's key/value
cache (paper Appendix B). In a small model the contrastive phase wears the second skill down
(`results/gpu_curve.md`: token accuracy at 16 tokens 39.8 % -> 23.4 % over gpu-a's contrastive
phase). The reader separates the two without touching the first:

    encode / generate / prefill of `text | S`     reader OFF   (the GEM model, unchanged; the
                                                               last S predicts t_1)
    decoding after the S cache (reconstruction)   reader ON    t_1 t_2 ... -> t_2 t_3 ... eos

It is a LoRA delta on the same linear layers as the GEM adapter, attached by forward hooks and
enabled only inside `with reader.enabled():`, so nothing else the model does can see it. The
decoder still sees only the k cached S entries (+ the sink): the text has to pass through S, so
what the reader recovers measures what the embedding's tokens hold. A fresh reader (B = 0)
decodes exactly as the GEM model does, so training starts from the model's own skill. The switch is
per thread: a thread decoding with the reader on never turns it on for another thread's `encode`.

Measured on the shipped model (README, "Is the text in S"): a few points more tokens, fewer exact
texts - the limit is what S holds. So it is a probe of S, and the shipped checkpoint has none.

Saved as `reader.safetensors` (fp16, a few MB) + `reader_config.json` next to a checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from ..storage.atomic import atomic_file, write_json_atomic

READER_WEIGHTS = "reader.safetensors"
READER_CONFIG = "reader_config.json"
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class ReaderConfig:
    r: int = 8
    alpha: int = 16
    targets: tuple = TARGETS

    @property
    def scale(self) -> float:
        return self.alpha / self.r


def target_linears(model, targets=TARGETS) -> dict[str, nn.Linear]:
    """{module name: nn.Linear} of the decoder's linear layers named in `targets`. Under an unmerged
    peft adapter the frozen `<target>.base_layer` is hooked, named as `<target>` (its input is the
    same), so a reader saved on a merged model loads on an unmerged one and back."""
    out = {}
    for name, m in model.named_modules():
        if not isinstance(m, nn.Linear):
            continue
        name = name.removesuffix(".base_layer")
        if name.rsplit(".", 1)[-1] in targets:
            out[name] = m
    return out


class Reader(nn.Module):
    """LoRA pairs (A: (r, in), B: (out, r), B = 0 at start) on `model`'s target linears, added to
    their outputs only while `enabled()` is active."""

    def __init__(self, model, config: ReaderConfig, dtype: torch.dtype | None = None):
        super().__init__()
        self.config = config
        linears = target_linears(model, config.targets)
        if not linears:
            raise ValueError(f"the reader found none of {config.targets} in the model; pass targets that exist")
        self.names = sorted(linears)
        ref = next(iter(linears.values())).weight
        dtype = dtype or ref.dtype
        self.A = nn.ParameterList()
        self.B = nn.ParameterList()
        for name in self.names:
            lin = linears[name]
            a = torch.empty(config.r, lin.in_features, dtype=dtype, device=ref.device)
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))
            self.A.append(nn.Parameter(a))
            self.B.append(nn.Parameter(torch.zeros(lin.out_features, config.r, dtype=dtype, device=ref.device)))
        self._state = threading.local()  # .on: this thread decodes with the reader
        self._handles = [linears[name].register_forward_hook(self._hook(i)) for i, name in enumerate(self.names)]

    def _hook(self, i: int):
        def hook(module, args, output):
            if not getattr(self._state, "on", False):
                return None
            a, b = self.A[i], self.B[i]
            delta = (args[0].to(a.dtype) @ a.t()) @ b.t() * self.config.scale
            return output + delta.to(output.dtype)
        return hook

    @contextlib.contextmanager
    def enabled(self):
        """Within this block (in this thread) the reader's deltas are added: decoding after S."""
        self._state.on = True
        try:
            yield self
        finally:
            self._state.on = False

    def detach_hooks(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    # -- files ---------------------------------------------------------------------------------
    def state(self) -> dict[str, torch.Tensor]:
        out = {}
        for name, a, b in zip(self.names, self.A, self.B):
            out[f"{name}.A"] = a.detach()
            out[f"{name}.B"] = b.detach()
        return out

    def save(self, folder: str | Path) -> None:
        """reader.safetensors (fp16) + reader_config.json into `folder`, each written atomically."""
        from safetensors.torch import save

        folder = Path(folder)
        tensors = {k: v.to(torch.float16).contiguous().cpu() for k, v in self.state().items()}
        with atomic_file(folder / READER_WEIGHTS, "wb") as f:
            f.write(save(tensors))
        write_json_atomic(folder / READER_CONFIG, {**asdict(self.config), "targets": list(self.config.targets)})

    @classmethod
    def load(cls, model, folder: str | Path, dtype: torch.dtype | None = None) -> "Reader":
        """The reader saved in `folder`, attached to `model` (its weights in `dtype`, default the
        model's)."""
        from safetensors.torch import load_file

        folder = Path(folder)
        data = json.loads((folder / READER_CONFIG).read_text())
        reader = cls(model, ReaderConfig(**{**data, "targets": tuple(data["targets"])}), dtype=dtype)
        tensors = load_file(str(folder / READER_WEIGHTS))
        missing = [n for n in reader.names if f"{n}.A" not in tensors]
        if missing:
            raise ValueError(f"{folder / READER_WEIGHTS} has no weights for {missing[:3]}...: it was saved "
                             f"for another model")
        with torch.no_grad():
            for i, name in enumerate(reader.names):
                reader.A[i].copy_(tensors[f"{name}.A"])
                reader.B[i].copy_(tensors[f"{name}.B"])
        return reader


def has_reader(folder: str | Path) -> bool:
    return (Path(folder) / READER_WEIGHTS).is_file() and (Path(folder) / READER_CONFIG).is_file()

"""An optional readout head: a small trained map on the pooled GEM state, for a frozen backbone.

With the backbone frozen (only the GEM token rows train, so the language model is kept exactly, as
in LLM2Vec-Gen), the head gives the embedding a little capacity of its own:

    e = x + W x + b        x: (n, d) the pooled last-layer state at S;  W (d, d), b (d,) start at 0

so an untrained head is the identity. With an output width m != d (`GemConfig.readout_dim`, e.g.
a distillation teacher's width, so that the embedding lives in the teacher's space) it is a plain
linear map e = W x + b, W (m, d) with the usual random start. Saved as `readout_head.safetensors`
next to gem_config.json.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from ..storage import load_safetensors
from torch import nn

HEAD_FILE = "readout_head.safetensors"


class ReadoutHead(nn.Module):
    """e = x + linear(x), the linear map initialised to zero (identity at the start); with
    out_dim != dim, e = linear(x) (a projection, randomly initialised)."""

    def __init__(self, dim: int, out_dim: int | None = None):
        super().__init__()
        out_dim = out_dim or dim
        self.residual = out_dim == dim
        self.linear = nn.Linear(dim, out_dim)
        if self.residual:
            nn.init.zeros_(self.linear.weight)
            nn.init.zeros_(self.linear.bias)

    @property
    def out_dim(self) -> int:
        return self.linear.weight.shape[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(n, d) -> (n, out_dim), computed in the head's dtype and returned in x's."""
        y = self.linear(x.to(self.linear.weight.dtype)).to(x.dtype)
        return x + y if self.residual else y

    def as_matrix(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(W_total (out_dim, dim), b (out_dim,)) with e = W_total x + b: the whole head as one affine map."""
        w = self.linear.weight.detach().float().cpu()
        if self.residual:
            w = w + torch.eye(w.shape[0])
        return w, self.linear.bias.detach().float().cpu()

    def save(self, folder: str | Path) -> None:
        state = {k: v.detach().float().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(Path(folder) / HEAD_FILE))

    def load(self, folder: str | Path) -> None:
        path = Path(folder) / HEAD_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{folder} has readout_head in its gem_config.json but no {HEAD_FILE}; "
                                    f"the checkpoint is incomplete: re-export or re-train it")
        self.load_state_dict({k: v.to(self.linear.weight.dtype) for k, v in load_safetensors(path).items()})

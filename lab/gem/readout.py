"""An optional readout head: a small trained map on the pooled GEM state, for a frozen backbone.

With the backbone frozen (only the GEM token rows train, so the language model is kept exactly, as
in LLM2Vec-Gen), the head gives the embedding a little capacity of its own:

    e = x + W x + b        x: (n, d) the pooled last-layer state at S;  W (d, d), b (d,) start at 0

so an untrained head is the identity. Saved as `readout_head.safetensors` next to gem_config.json.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

HEAD_FILE = "readout_head.safetensors"


class ReadoutHead(nn.Module):
    """e = x + linear(x), the linear map initialised to zero (identity at the start)."""

    def __init__(self, dim: int):
        super().__init__()
        self.linear = nn.Linear(dim, dim)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(n, d) -> (n, d), computed in the head's dtype and returned in x's."""
        return (x + self.linear(x.to(self.linear.weight.dtype)).to(x.dtype))

    def save(self, folder: str | Path) -> None:
        state = {k: v.detach().float().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(Path(folder) / HEAD_FILE))

    def load(self, folder: str | Path) -> None:
        path = Path(folder) / HEAD_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{folder} has readout_head in its gem_config.json but no {HEAD_FILE}; "
                                    f"the checkpoint is incomplete: re-export or re-train it")
        self.load_state_dict({k: v.to(self.linear.weight.dtype) for k, v in load_file(str(path)).items()})

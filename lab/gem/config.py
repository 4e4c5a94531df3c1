"""`GemConfig`: how a model reads out GEM embeddings; saved as JSON in every GEM checkpoint."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from ..storage import write_json_atomic

READOUTS = ("mean", "concat")


def suffix_attends_bos(suffix_sees_bos: bool, sink_token: str | None) -> bool:
    """Whether the suffix may see BOS: the mask option, or implied by a sink token (a sink is put
    in front of every row to be seen). The one rule for the training masks and the model's."""
    return bool(suffix_sees_bos or sink_token)


AUTO_SINK = "auto"


def choose_sink_token(tokenizer) -> str | None:
    """The sink a tokenizer needs: None when it puts its own BOS in front of every text (that BOS
    already is a content-free first token), else `<|endoftext|>` if its vocabulary has one
    (SmolLM2, Qwen2.5, GPT-2: the token the shipped model uses), else its EOS token."""
    if bos_prefix(tokenizer):
        return None
    if "<|endoftext|>" in tokenizer.get_vocab():
        return "<|endoftext|>"
    if tokenizer.eos_token is None:
        raise ValueError("sink_token: auto found no BOS, no <|endoftext|> and no EOS token in this tokenizer; "
                         "set gem.sink_token to one of its special tokens, or null")
    return tokenizer.eos_token


def bos_prefix(tokenizer) -> list[int]:
    """[bos_id] if the tokenizer prepends BOS to every text, else []."""
    with_special = tokenizer("a", add_special_tokens=True)["input_ids"]
    bos = tokenizer.bos_token_id
    return [bos] if bos is not None and with_special and with_special[0] == bos else []


def sink_ids(tokenizer, gem_config: "GemConfig | None") -> list[int]:
    """[id of the GEM config's sink token] ("auto" resolved for this tokenizer), or [] for none."""
    sink = gem_config.sink_token if gem_config else None
    if sink == AUTO_SINK:
        sink = choose_sink_token(tokenizer)
    if sink is None:
        return []
    if sink not in tokenizer.get_vocab():
        raise ValueError(f"sink_token {sink!r} is not a token of this tokenizer; use one of its special "
                         f"tokens, e.g. {tokenizer.eos_token!r}, or sink_token=None")
    return [tokenizer.convert_tokens_to_ids(sink)]


def prefix_ids(tokenizer, gem_config: "GemConfig | None") -> tuple[list[int], list[int]]:
    """(sink_ids, bos): what every text is read after. The tokenizer's own BOS when it prepends
    one (then no sink), else the config's sink token standing in for the missing BOS, else []."""
    tokenizer_bos = bos_prefix(tokenizer)
    sinks = [] if tokenizer_bos else sink_ids(tokenizer, gem_config)
    return sinks, tokenizer_bos or sinks


@dataclass
class GemConfig:
    """How a model reads out GEM embeddings (gem-method.md §2, §5).

    k: number of special tokens S_1..S_k appended to a text.
    readout: how the k last-layer states become one vector: "mean" (d) or "concat" (k*d).
    suffix_sees_bos: mask option, suffix tokens may also attend to BOS (ablation; default off).
    sink_token: a content-free token (e.g. "<|endoftext|>") put in front of every row when the
        tokenizer adds no BOS of its own, and visible to the suffix: an attention sink the suffix
        may park attention on, so that S need not double as the sink. None: no sink (the paper).
        "auto": chosen for the tokenizer when the GEM tokens are added (`choose_sink_token`): none
        when it prepends its own BOS (that is the sink), else `<|endoftext|>` or its EOS.
    readout_head: a small trained map on the pooled state (`lab.gem.readout`).
    readout_dim: the head's output width; 0 = the pooled width (a residual map). E.g. a teacher's
        width (384 for all-MiniLM-L6-v2), when the embedding is distilled into the teacher's space.
    max_length: texts longer than this many tokens are truncated (with one warning per call).
    reconstruct_beams: how `GemModel.reconstruct` decodes when not told: 1 greedy, > 1 beam search
        with that many beams. A model's card reports its reconstruction under this setting.
    base_model: registry name, folder or hub id of the backbone.
    trained: False for freshly added (untrained) tokens; `pooling="gem"` needs True.
    """

    k: int = 1
    readout: str = "mean"
    suffix_sees_bos: bool = False
    sink_token: str | None = None
    readout_head: bool = False
    readout_dim: int = 0
    max_length: int = 512
    reconstruct_beams: int = 1
    base_model: str = "smollm2-135m"
    trained: bool = False

    def __post_init__(self):
        kinds = {"k": int, "readout": str, "suffix_sees_bos": bool, "readout_head": bool, "readout_dim": int,
                 "max_length": int, "reconstruct_beams": int, "base_model": str, "trained": bool}
        for name, kind in kinds.items():
            value = getattr(self, name)
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                what = {bool: "true or false", int: "an integer", str: "a string"}[kind]
                raise ValueError(f"GemConfig.{name} must be {what}, got {value!r}")
        if self.sink_token is not None and not isinstance(self.sink_token, str):
            raise ValueError(f"GemConfig.sink_token must be a string or null, got {self.sink_token!r}")
        if not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"GemConfig.k must be a positive int, got {self.k!r}")
        if self.readout not in READOUTS:
            raise ValueError(f"GemConfig.readout must be one of {READOUTS}, got {self.readout!r}")
        if self.readout_dim < 0 or (self.readout_dim and not self.readout_head):
            raise ValueError(f"GemConfig.readout_dim must be 0, or > 0 with readout_head=True; got {self.readout_dim}")
        if self.reconstruct_beams < 1:
            raise ValueError(f"GemConfig.reconstruct_beams must be >= 1 (1: greedy), got {self.reconstruct_beams}")
        if self.max_length < 8:
            raise ValueError(f"GemConfig.max_length must be >= 8, got {self.max_length}")

    @property
    def suffix_attends_bos(self) -> bool:
        return suffix_attends_bos(self.suffix_sees_bos, self.sink_token)

    FILENAME = "gem_config.json"

    def save(self, folder: str | Path) -> None:
        write_json_atomic(Path(folder) / self.FILENAME, dataclasses.asdict(self))

    @classmethod
    def load(cls, folder: str | Path) -> "GemConfig":
        from ..storage import read_json

        data = read_json(Path(folder) / cls.FILENAME)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"{folder}/{cls.FILENAME} has unknown keys {sorted(unknown)} (newer lab version?)")
        try:
            return cls(**data)
        except ValueError as e:
            raise ValueError(f"{Path(folder) / cls.FILENAME}: {e}") from None

"""Export a GEM checkpoint for tools that do not know GEM.

    python -m lab export CHECKPOINT --to merged OUT   # a plain HF folder: AutoModelForCausalLM
    python -m lab export CHECKPOINT --to st OUT       # a sentence-transformers folder
    python -m lab export CHECKPOINT --to release OUT [--card README.md] [--rank N]  # the small GEM checkpoint

release: what ships in `checkpoints/`: the checkpoint's own files (config, token rows, LoRA
adapter, train config) without `training_state/`, plus the run's `metrics.jsonl` and a model card;
it loads with `lab.load(OUT)` exactly like the checkpoint. With `rank`, its LoRA is stored at that
smaller rank (the best approximation of each update, `lab.weights.shrink`; the manifest records the
rank it was trained at).

merged: the adapter is merged into the weights and saved with the tokenizer (GEM tokens included)
and gem_config.json, so `AutoModelForCausalLM.from_pretrained(OUT)` generates as usual and
`lab.load(OUT)` is the full GEM model again.

st (k = 1): stock sentence-transformers modules, no custom code: the tokenizer's post-processor
appends the GEM token to every text, `Pooling(pooling_mode="lasttoken")` reads the last layer at
it, and `Normalize` L2-normalises. With one special token at the end, the GEM mask is the causal
mask, so `SentenceTransformer(OUT).encode(texts)` equals `lab.load(CHECKPOINT).encode(texts)`.
For k > 1 the special tokens must not see each other, which stock modules cannot express.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from ..gem import GemModel
from ..storage import atomic_dir, folder_problem
from .checkpoints import load_checkpoint

log = logging.getLogger(__name__)


def _save_merged(gem: GemModel, folder: Path) -> None:
    gem.model.save_pretrained(folder, safe_serialization=True)
    gem.tokenizer.save_pretrained(folder)
    gem.gem_config.save(folder)
    if gem.readout_head is not None:
        gem.readout_head.save(folder)


def _save_dense_head(gem: GemModel, folder: Path) -> None:
    """The readout head as a stock sentence-transformers Dense layer (weight I + W for the residual head)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from sentence_transformers.models import Dense

    weight, bias = gem.readout_head.as_matrix()
    dense = Dense(weight.shape[1], weight.shape[0], bias=True, activation_function=torch.nn.Identity(),
                  init_weight=weight, init_bias=bias)
    folder.mkdir(parents=True, exist_ok=True)
    dense.save(str(folder))


def export_target(checkpoint: str | Path, out: str | Path) -> Path:
    """`out` as a folder an export may write: never the checkpoint itself, a folder inside it, or a
    folder holding it (`export RUN/checkpoint-40 --to release RUN` would delete the run)."""
    src, dst = Path(checkpoint).resolve(), Path(out).resolve()
    if dst == src or src.is_relative_to(dst) or dst.is_relative_to(src):
        raise ValueError(f"cannot export {src} to {dst}: the output folder holds or is inside the checkpoint; "
                         f"choose a folder outside it")
    return Path(out)


def export_merged(checkpoint: str | Path, out: str | Path, force: bool = False) -> Path:
    """Write a merged, plain HF folder (atomically; a folder the lab did not write only with force)."""
    out = export_target(checkpoint, out)
    gem = load_checkpoint(checkpoint, dtype=torch.float32, device="cpu", merge_adapter=True)
    with atomic_dir(out, metadata={"exported_from": str(checkpoint), "kind": "merged"}, replace_foreign=force) as tmp:
        _save_merged(gem, tmp)
    return out


def _append_special_post_processor(tokenizer, bos: list[int], special: str, special_id: int) -> None:
    from tokenizers import processors

    pieces, tokens = ["$A", special], [(special, special_id)]
    if bos:
        bos_token = tokenizer.convert_ids_to_tokens(bos[0])
        pieces.insert(0, bos_token)
        tokens.append((bos_token, bos[0]))
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=" ".join(pieces), special_tokens=tokens)


def export_sentence_transformers(checkpoint: str | Path, out: str | Path, force: bool = False) -> Path:
    """Write a sentence-transformers folder whose encode() gives the GEM embeddings (k = 1;
    atomically; a folder the lab did not write only with force)."""
    out = export_target(checkpoint, out)
    gem = load_checkpoint(checkpoint, dtype=torch.float32, device="cpu", merge_adapter=True)
    if gem.gem_config.k != 1:
        raise ValueError(f"the sentence-transformers export needs k=1 GEM token (this checkpoint has k="
                         f"{gem.gem_config.k}): stock modules cannot keep several special tokens from seeing each "
                         f"other. Use lab.load(checkpoint).encode(...) instead.")
    special = gem.tokenizer.convert_ids_to_tokens(gem.special_ids[0])
    with atomic_dir(out, metadata={"exported_from": str(checkpoint), "kind": "sentence-transformers"},
                    replace_foreign=force) as tmp:
        _save_merged(gem, tmp)
        _append_special_post_processor(gem.tokenizer, gem.bos, special, gem.special_ids[0])
        gem.tokenizer.save_pretrained(tmp)
        dim = gem.hidden_size
        (tmp / "1_Pooling").mkdir()
        (tmp / "1_Pooling" / "config.json").write_text(json.dumps({
            "word_embedding_dimension": dim, "pooling_mode_lasttoken": True, "pooling_mode_mean_tokens": False,
            "pooling_mode_cls_token": False, "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False, "pooling_mode_weightedmean_tokens": False,
            "include_prompt": True}, indent=2))
        modules = [("", "Transformer"), ("1_Pooling", "Pooling")]
        if gem.readout_head is not None:
            _save_dense_head(gem, tmp / "2_Dense")
            modules.append(("2_Dense", "Dense"))
        modules.append((f"{len(modules)}_Normalize", "Normalize"))
        (tmp / modules[-1][0]).mkdir()
        (tmp / "modules.json").write_text(json.dumps([
            {"idx": i, "name": str(i), "path": path, "type": f"sentence_transformers.models.{kind}"}
            for i, (path, kind) in enumerate(modules)], indent=2))
        (tmp / "sentence_bert_config.json").write_text(json.dumps(
            {"max_seq_length": gem.max_length, "do_lower_case": False}, indent=2))
        (tmp / "README.md").write_text(
            f"# GEM embeddings ({gem.gem_config.base_model})\n\nExported by GEM Lab from `{checkpoint}`. "
            f"`SentenceTransformer(path).encode(texts)` appends `{special}` to each text and returns the "
            f"normalised last-layer state at it. The same folder loads with `AutoModelForCausalLM` and "
            f"generates as usual.\n")
    return out


RELEASE_SKIP = {"training_state", "MANIFEST.json"}


def export_release(checkpoint: str | Path, out: str | Path, card: str = "", force: bool = False,
                   rank: int | None = None) -> Path:
    """Copy a training checkpoint without its optimizer state, with the run's metrics log
    (atomically; a folder the lab did not write only with force); `rank`: its LoRA stored at that
    smaller rank (`lab.weights.shrink`)."""
    import shutil

    from .shrink import shrink_adapter_in_place

    checkpoint, out = Path(checkpoint).resolve(), export_target(checkpoint, out)
    problem = folder_problem(checkpoint, content=True)
    if problem:
        raise RuntimeError(f"cannot export {checkpoint}: {problem}")
    if rank is not None and not (checkpoint / "adapter").is_dir():
        raise ValueError(f"--rank {rank}: {checkpoint} has no LoRA adapter to store at a smaller rank")
    metrics = checkpoint.parent / "metrics.jsonl"
    metadata = {"exported_from": checkpoint.name, "kind": "release"}
    with atomic_dir(out, metadata=metadata, replace_foreign=force) as tmp:
        for item in checkpoint.iterdir():
            if item.name in RELEASE_SKIP:
                continue
            (shutil.copytree if item.is_dir() else shutil.copy2)(item, tmp / item.name)
        if metrics.is_file():
            shutil.copy2(metrics, tmp / "metrics.jsonl")
        if card:
            (tmp / "README.md").write_text(card, encoding="utf-8")
        if rank is not None:
            metadata["shrunk_from_rank"] = shrink_adapter_in_place(tmp / "adapter", rank)
    return out

"""Embed a large corpus into one .npy file: streaming, resumable, sharded across processes.

    python -m lab embed --model M --input corpus.txt --output E.npy
    accelerate launch --num_processes 4 -m lab embed ...   # GPUs
    torchrun --standalone --nproc_per_node 2 -m lab embed ...   # CPU processes (gloo)

The corpus is cut into chunks of `chunk_size` texts. Each chunk's embeddings are written atomically
to `E.npy.parts/chunk-000123.npy`; a rerun after an interrupt skips the chunks already there. Under
`accelerate launch` process r takes chunks r, r+W, r+2W, ...; when all are done, process 0 assembles
`E.npy` (atomically) and removes the parts. Row i of the output is the embedding of text i.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from ..weights.loading import load, weights_fingerprint
from ..storage import atomic_file, write_json_atomic

log = logging.getLogger(__name__)


def iter_texts(path: Path, field: str = "text") -> Iterator[str]:
    """Texts of a .txt (one per line) or .jsonl (`field` of each object) file, in order."""
    suffix = path.suffix.lower()
    if suffix not in (".txt", ".jsonl"):
        raise ValueError(f"{path}: unsupported input type {suffix!r}; use .txt (one text per line) or .jsonl")
    with open(path, "rb") as f:  # lines end at "\n" only (a lone "\r" inside a text is part of it)
        for n, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8").removesuffix("\n").removesuffix("\r")
            except UnicodeDecodeError as e:
                raise ValueError(f"{path}:{n} is not UTF-8 text ({e.reason})") from None
            if suffix == ".jsonl":
                try:
                    obj = json.loads(line)
                except ValueError as e:
                    raise ValueError(f"{path}:{n} is not valid JSON ({e})") from None
                if not isinstance(obj, dict) or not isinstance(obj.get(field), str):
                    raise ValueError(f"{path}:{n} has no string field {field!r}; pick the field with --field")
                line = obj[field]
            if not line.strip():
                raise ValueError(f"{path}:{n} is empty; remove empty lines (row i of the output is text i)")
            yield line


def count_texts(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def _fingerprint(path: Path, **settings) -> dict:
    st = path.stat()
    h = hashlib.sha256()
    with open(path, "rb") as f:  # head + tail + size: cheap, catches a swapped or edited input
        h.update(f.read(1 << 20))
        f.seek(max(0, st.st_size - (1 << 20)))
        h.update(f.read())
    return {"input": str(path.resolve()), "size": st.st_size, "sha256_head_tail": h.hexdigest(), **settings}


def _chunk_path(parts: Path, i: int) -> Path:
    return parts / f"chunk-{i:06d}.npy"


def _chunk_done(path: Path, rows: int) -> bool:
    try:
        return np.load(path, mmap_mode="r").shape[0] == rows
    except (OSError, ValueError):
        return False


def embed_corpus(model: str, input_path: str | os.PathLike, output_path: str | os.PathLike,
                 pooling: str | None = None, batch_size: int = 32, chunk_size: int = 1024, field: str = "text",
                 max_length: int | None = None, dtype: str | None = None, gem=None) -> Path | None:
    """Embed every text of `input_path` into `output_path` (.npy, float32, (n, d)).

    Returns the output path on process 0 (None on the others). `gem` may pass an already loaded
    GemModel (then `model` only labels the run).
    """
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())
    input_path, output_path = Path(input_path), Path(output_path)
    if output_path.suffix != ".npy":
        raise ValueError(f"--output must end in .npy, got {output_path}")
    if not input_path.is_file():
        raise FileNotFoundError(f"--input {input_path} does not exist")
    n = count_texts(input_path)
    if n == 0:
        raise ValueError(f"{input_path} holds no texts")
    parts = output_path.with_name(output_path.name + ".parts")
    # keyed on the weights too: a model re-trained or re-exported behind the same name never resumes
    # the old weights' chunks
    settings = dict(model=model, weights=weights_fingerprint(model), pooling=pooling, chunk_size=chunk_size,
                    field=field, max_length=max_length, dtype=dtype, n=n)
    if state.is_main_process:
        _claim_parts_folder(parts, _fingerprint(input_path, **settings))
    state.wait_for_everyone()
    if gem is None:
        gem = load(model, dtype=dtype, device=str(state.device))
    n_chunks = (n + chunk_size - 1) // chunk_size
    mine = list(range(state.process_index, n_chunks, state.num_processes))
    todo = [i for i in mine if not _chunk_done(_chunk_path(parts, i), min(chunk_size, n - i * chunk_size))]
    log.info("process %d of %d: %d of %d chunks", state.process_index, state.num_processes, len(mine), n_chunks)
    if len(todo) < len(mine):
        log.info("process %d: resuming, %d of %d chunks already done", state.process_index,
                 len(mine) - len(todo), len(mine))
    texts = iter_texts(input_path, field)
    pos = 0
    bar = tqdm(total=len(todo) * chunk_size, desc=f"embed[{state.process_index}]", unit="text",
               disable=not state.is_local_main_process)
    for i in todo:
        chunk = list(itertools.islice(texts, i * chunk_size - pos, i * chunk_size - pos + chunk_size))
        pos = i * chunk_size + len(chunk)
        emb = gem.encode(chunk, batch_size=batch_size, pooling=pooling, max_length=max_length,
                         show_progress_bar=False)
        with atomic_file(_chunk_path(parts, i), "wb") as f:
            np.save(f, emb.astype(np.float32))
        bar.update(len(chunk))
    bar.close()
    state.wait_for_everyone()
    if not state.is_main_process:
        return None
    return _assemble(parts, output_path, n_chunks)


def _claim_parts_folder(parts: Path, fingerprint: dict) -> None:
    """Create `parts` (or reuse it for the same run); a folder left by a different run raises."""
    parts.mkdir(parents=True, exist_ok=True)
    meta = parts / "run.json"
    if meta.exists() and json.loads(meta.read_text()) != json.loads(json.dumps(fingerprint)):
        raise RuntimeError(
            f"{parts} holds partial results of a different run (other input, model, weights or settings). "
            f"Finish that run, or delete {parts} to start over."
        )
    write_json_atomic(meta, fingerprint)


def _assemble(parts: Path, output_path: Path, n_chunks: int) -> Path:
    """Concatenate the chunk files into `output_path` atomically, then delete the parts."""
    first = np.load(_chunk_path(parts, 0), mmap_mode="r")
    n = sum(np.load(_chunk_path(parts, i), mmap_mode="r").shape[0] for i in range(n_chunks))
    tmp = output_path.with_name(f".{output_path.name}.tmp")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, first.shape[1]))
    row = 0
    for i in range(n_chunks):
        block = np.load(_chunk_path(parts, i), mmap_mode="r")
        out[row:row + len(block)] = block
        row += len(block)
    out.flush()
    del out
    os.replace(tmp, output_path)
    shutil.rmtree(parts, ignore_errors=True)
    log.info("wrote %s: %d x %d", output_path, n, first.shape[1])
    return output_path

"""The serving engine: one loaded model, one worker thread, embeddings batched across requests.

Every model call runs on a single worker thread (the model is used by one computation at a time,
as in the app). Embedding requests that arrive close together are merged into one `encode` call
(`EmbedBatcher`: up to `Limits.max_batch_texts` texts, waiting at most `Limits.batch_wait_s` for
company), which gives the same vectors as one request at a time (tested) at a higher throughput
(`bench/serve.py`). At most `Limits.max_pending` requests wait or run; one more is refused
(`Busy`, HTTP 429). A streaming generation stops as soon as its client goes away.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    """What one request may ask and how much may wait: each refused with an error naming it."""

    max_inputs: int = 256  # texts per embeddings request
    max_input_tokens: int = 512  # tokens per text / prompt (longer: refused, not cut)
    max_tokens: int = 512  # tokens a completion may generate
    max_pending: int = 64  # requests waiting or running; one more gets HTTP 429
    max_batch_texts: int = 64  # texts merged into one encode call
    batch_wait_s: float = 0.005  # how long a lone embedding request waits for company


class Busy(Exception):
    """The server's queue is full (HTTP 429)."""


class LimitExceeded(ValueError):
    """A request asks for more than a limit allows (HTTP 400, the limit named)."""

    def __init__(self, message: str, param: str):
        super().__init__(message)
        self.param = param


class _Cancelled(StoppingCriteria):
    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids, scores, **kwargs):
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


class _Deltas(BaseStreamer):
    """Text pieces of the new tokens as they come (whole characters only), to `emit`; None at the end."""

    def __init__(self, tokenizer, emit):
        self.tokenizer, self.emit, self.ids, self.sent, self.prompt_seen = tokenizer, emit, [], "", False

    def put(self, value):
        if not self.prompt_seen:  # generate() first puts the prompt
            self.prompt_seen = True
            return
        self.ids += value.reshape(-1).tolist()
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):  # half of a multi-byte character: wait for the rest
            return
        if len(text) > len(self.sent):
            self.emit(text[len(self.sent):])
            self.sent = text

    def end(self):
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if len(text) > len(self.sent):
            self.emit(text[len(self.sent):])
        self.emit(None)


class Engine:
    """Owns a `GemModel`; every call goes through its single worker thread."""

    def __init__(self, gem, name: str, limits: Limits = Limits()):
        import dataclasses

        readable = gem.max_length - len(gem.bos) - len(gem.special_ids)  # what encode reads uncut
        self.gem, self.name = gem, name
        self.limits = dataclasses.replace(limits, max_input_tokens=min(limits.max_input_tokens, readable))
        self.pooling = "gem" if gem.is_gem else "mean"
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gem-model")
        self.pending = 0
        self.cancel_all = threading.Event()

    # -- admission ------------------------------------------------------------------------------
    def admit(self) -> None:
        """Count one more request in, or raise Busy when `max_pending` are already in."""
        if self.pending >= self.limits.max_pending:
            raise Busy(f"the server is busy: {self.pending} requests are waiting or running (limit "
                       f"{self.limits.max_pending}); retry shortly")
        self.pending += 1

    def release(self) -> None:
        self.pending -= 1

    # -- checks ---------------------------------------------------------------------------------
    def token_count(self, text: str) -> int:
        return len(self.gem.text_ids(text))

    def check_texts(self, texts: list[str], what: str = "input") -> list[int]:
        """Token counts of `texts`, each within `max_input_tokens` (else LimitExceeded naming it)."""
        if len(texts) > self.limits.max_inputs:
            raise LimitExceeded(f"{len(texts)} inputs in one request; the limit is {self.limits.max_inputs} "
                                f"(send several requests)", what)
        counts = [self.token_count(t) for t in texts]
        for i, n in enumerate(counts):
            if n > self.limits.max_input_tokens:
                raise LimitExceeded(f"{what}[{i}] has {n} tokens; the limit is {self.limits.max_input_tokens} "
                                    f"tokens per text (shorten or split it)", what)
        return counts

    def check_max_tokens(self, max_tokens: int) -> int:
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise LimitExceeded(f"max_tokens must be a positive integer, got {max_tokens!r}", "max_tokens")
        if max_tokens > self.limits.max_tokens:
            raise LimitExceeded(f"max_tokens={max_tokens}; the limit is {self.limits.max_tokens}", "max_tokens")
        return max_tokens

    # -- model calls (on the worker thread) -------------------------------------------------------
    async def run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.worker, fn, *args)

    def encode(self, texts: list[str], pooling: str | None = None) -> np.ndarray:
        return self.gem.encode(texts, pooling=pooling or self.pooling, batch_size=32, show_progress_bar=False)

    def generation_kwargs(self, max_tokens: int, temperature: float | None, top_p: float | None,
                          seed: int | None) -> dict:
        if not temperature:
            return {"max_new_tokens": max_tokens, "do_sample": False}
        if seed is not None:
            torch.manual_seed(seed)
        return {"max_new_tokens": max_tokens, "do_sample": True, "temperature": float(temperature),
                "top_p": float(top_p or 1.0)}

    def complete_ids(self, ids: list[int], kwargs: dict) -> list[int]:
        new = self.gem.generate_ids(torch.tensor([ids]), **kwargs)
        return new[0].tolist()

    def stream_ids(self, ids: list[int], kwargs: dict, emit, cancel: threading.Event) -> None:
        """Generate on the worker thread, emitting text pieces (then None); stops when `cancel` is set."""
        stop = StoppingCriteriaList([_Cancelled(cancel), _Cancelled(self.cancel_all)])
        streamer = _Deltas(self.gem.tokenizer, emit)
        try:
            self.gem.generate_ids(torch.tensor([ids]), streamer=streamer, stopping_criteria=stop, **kwargs)
        except BaseException as e:  # the client sees the stream end; the server log has why
            log.exception("generation failed")
            emit(e)

    def embed_and_generate(self, document: str, prompt: str, max_tokens: int):
        return self.gem.embed_and_generate(document, prompt, max_new_tokens=max_tokens, pooling=self.pooling)

    def close(self) -> None:
        """Stop streams in flight and the worker (after the job it runs)."""
        self.cancel_all.set()
        self.worker.shutdown(wait=True, cancel_futures=True)


class EmbedBatcher:
    """Merges embedding requests that arrive close together into one `Engine.encode` call."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.queue: asyncio.Queue = asyncio.Queue()
        self.task: asyncio.Task | None = None
        self.batches: list[int] = []  # texts per encode call (for the benchmark and tests)

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()

    async def embed(self, texts: list[str], pooling: str) -> np.ndarray:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((texts, pooling, future))
        return await future

    async def _loop(self) -> None:
        limits = self.engine.limits
        while True:
            first = await self.queue.get()
            jobs, n = [first], len(first[0])
            loop = asyncio.get_running_loop()
            deadline = loop.time() + limits.batch_wait_s
            while n < limits.max_batch_texts:
                left = deadline - loop.time()
                try:
                    job = await asyncio.wait_for(self.queue.get(), timeout=max(left, 0)) if left > 0 \
                        else self.queue.get_nowait()
                except (asyncio.TimeoutError, asyncio.QueueEmpty):
                    break
                jobs.append(job)
                n += len(job[0])
            for pooling in dict.fromkeys(j[1] for j in jobs):  # one encode per pooling asked for
                group = [j for j in jobs if j[1] == pooling]
                texts = [t for j in group for t in j[0]]
                self.batches.append(len(texts))
                try:
                    emb = await self.engine.run(self.engine.encode, texts, pooling)
                except Exception as e:
                    for j in group:
                        if not j[2].done():
                            j[2].set_exception(e)
                    continue
                at = 0
                for j in group:
                    if not j[2].done():
                        j[2].set_result(emb[at:at + len(j[0])])
                    at += len(j[0])

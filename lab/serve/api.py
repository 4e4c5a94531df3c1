"""The HTTP API: OpenAI-compatible routes over one `Engine`, plus GEM's one-prefill extension.

    GET  /v1/models                 the model, its pooling, embedding width and limits
    POST /v1/embeddings             {"model", "input": str | [str], "encoding_format": float | base64}
    POST /v1/completions            {"model", "prompt": str, "max_tokens", "temperature", "stream", "stop"}
    POST /v1/chat/completions       {"model", "messages": [...], "max_tokens", "temperature", "stream", "stop"}
    POST /v1/gem/embed_and_generate {"model", "document", "prompt", "max_tokens"}: one prefill of the
                                    document gives its embedding and the cache the answer continues from

Embeddings use the GEM readout for a GEM model and mean pooling for a base model; the pooling is
stated in /v1/models and in every embeddings response (`"pooling"`). Errors are OpenAI-style JSON,
`{"error": {"message", "type", "param", "code"}}`, each naming the limit or field at fault.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
import uuid
from contextlib import asynccontextmanager

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from .engine import Busy, EmbedBatcher, Engine, LimitExceeded

POOLINGS = ("gem", "mean", "last")


def error(status: int, message: str, kind: str = "invalid_request_error", param: str | None = None,
          code: str | None = None, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}},
                        status_code=status, headers=headers)


class BadRequest(ValueError):
    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


def _field(body: dict, name: str, kind, default=None, required: bool = False):
    if name not in body or body[name] is None:
        if required:
            raise BadRequest(f"'{name}' is required", name)
        return default
    value = body[name]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise BadRequest(f"'{name}' must be {getattr(kind, '__name__', kind)}, got {type(value).__name__}", name)
    return value


def build_app(engine: Engine) -> FastAPI:
    """The FastAPI app serving `engine` (start it with uvicorn; `lab.serve.serve` does)."""
    state = {"batcher": None, "started": time.time()}

    @asynccontextmanager
    async def lifespan(app):
        state["batcher"] = EmbedBatcher(engine)
        state["batcher"].start()
        yield
        engine.cancel_all.set()  # streams in flight end now; requests in flight finish (uvicorn waits)
        await state["batcher"].stop()

    app = FastAPI(title="GEM Lab server", lifespan=lifespan)
    app.state.engine, app.state.serving = engine, state
    app.add_exception_handler(BadRequest, lambda r, e: error(400, str(e), param=e.param))
    app.add_exception_handler(LimitExceeded, lambda r, e: error(400, str(e), param=e.param, code="limit_exceeded"))
    app.add_exception_handler(Busy, lambda r, e: error(429, str(e), kind="rate_limit_error", code="queue_full",
                                                       headers={"Retry-After": "1"}))
    app.add_api_route("/v1/models", models, methods=["GET"])
    app.add_api_route("/v1/embeddings", embeddings, methods=["POST"])
    app.add_api_route("/v1/completions", completions, methods=["POST"])
    app.add_api_route("/v1/chat/completions", chat_completions, methods=["POST"])
    app.add_api_route("/v1/gem/embed_and_generate", embed_and_generate, methods=["POST"])
    return app


async def body_of(request: Request) -> dict:
    """The request's JSON object, its `model` (if given) checked against the one served."""
    engine = request.app.state.engine
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BadRequest("the request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    model = body.get("model")
    if model is not None and model != engine.name:
        raise BadRequest(f"model {model!r} is not served here; this server serves {engine.name!r} "
                         f"(GET /v1/models)", "model")
    return body


async def models(request: Request):
    engine, state = request.app.state.engine, request.app.state.serving
    gem = engine.gem
    cfg = gem.gem_config
    return {"object": "list", "data": [{
        "id": engine.name, "object": "model", "created": int(state["started"]), "owned_by": "gem-lab",
        "pooling": engine.pooling, "embedding_dim": gem.embedding_dim(engine.pooling),
        "gem": None if not gem.is_gem else {"k": cfg.k, "sink_token": cfg.sink_token, "readout": cfg.readout,
                                            "readout_head": cfg.readout_head},
        "limits": {"max_inputs": engine.limits.max_inputs, "max_input_tokens": engine.limits.max_input_tokens,
                   "max_tokens": engine.limits.max_tokens, "max_pending": engine.limits.max_pending},
    }]}


async def embeddings(request: Request):
    engine = request.app.state.engine
    body = await body_of(request)
    texts = body.get("input")
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise BadRequest("'input' must be a string or a non-empty list of strings (token arrays are not "
                         "accepted: send text)", "input")
    if any(not t.strip() for t in texts):
        raise BadRequest("'input' holds an empty string: every text needs content", "input")
    pooling = _field(body, "pooling", str, engine.pooling)
    if pooling not in POOLINGS or (pooling == "gem" and not engine.gem.is_gem):
        raise BadRequest(f"pooling {pooling!r} is not available here; use one of "
                         f"{[p for p in POOLINGS if p != 'gem' or engine.gem.is_gem]}", "pooling")
    fmt = _field(body, "encoding_format", str, "float")
    if fmt not in ("float", "base64"):
        raise BadRequest("encoding_format must be 'float' or 'base64'", "encoding_format")
    dim = engine.gem.embedding_dim(pooling)
    dims = _field(body, "dimensions", int)
    if dims is not None and dims != dim:
        raise BadRequest(f"dimensions={dims}: this model's embeddings have {dim} dimensions, and GEM's readout "
                         f"is not trained to be cut shorter", "dimensions")
    counts = engine.check_texts(texts)
    engine.admit()
    try:
        emb = await request.app.state.serving["batcher"].embed(texts, pooling)
    finally:
        engine.release()
    data = [{"object": "embedding", "index": i,
             "embedding": base64.b64encode(np.asarray(e, dtype="<f4").tobytes()).decode() if fmt == "base64"
             else [float(x) for x in e]} for i, e in enumerate(emb)]
    return {"object": "list", "data": data, "model": engine.name, "pooling": pooling,
            "usage": {"prompt_tokens": sum(counts), "total_tokens": sum(counts)}}


def generation_request(engine: Engine, body: dict, chat: bool) -> tuple[list[int], dict, list[str], bool]:
    """(prompt ids, generation kwargs, stop strings, stream?) of a completions request, each checked."""
    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(
                isinstance(m, dict) and isinstance(m.get("content"), str) and m.get("role") for m in messages):
            raise BadRequest("'messages' must be a non-empty list of {role, content} objects", "messages")
        if not engine.gem.tokenizer.chat_template:
            raise BadRequest(f"{engine.name} has no chat template; use /v1/completions", "messages")
        ids = engine.gem.chat_ids([{"role": m["role"], "content": m["content"]} for m in messages])
        what = "messages"
    else:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str) or not prompt.strip():
            raise BadRequest("'prompt' must be a non-empty string (one prompt per request)", "prompt")
        ids = engine.gem.prompt_ids(prompt)
        what = "prompt"
    if len(ids) > engine.limits.max_input_tokens:
        raise LimitExceeded(f"the {what} has {len(ids)} tokens; the limit is {engine.limits.max_input_tokens}",
                            what)
    if _field(body, "n", int, 1) != 1:
        raise BadRequest("n > 1 is not supported: send one request per completion", "n")
    max_tokens = engine.check_max_tokens(_field(body, "max_tokens", int, None)
                                         or _field(body, "max_completion_tokens", int, 16))
    kwargs = engine.generation_kwargs(max_tokens, _field(body, "temperature", float, 0.0),
                                      _field(body, "top_p", float, 1.0), _field(body, "seed", int))
    stop = body.get("stop") or []
    stop = [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop) or len(stop) > 4:
        raise BadRequest("'stop' must be a string or a list of up to 4 non-empty strings", "stop")
    return ids, kwargs, stop, bool(body.get("stream"))


def cut_at_stop(text: str, stop: list[str]) -> tuple[str, bool]:
    cuts = [text.index(s) for s in stop if s in text]
    return (text[:min(cuts)], True) if cuts else (text, False)


async def generate(request: Request, chat: bool):
    engine = request.app.state.engine
    body = await body_of(request)
    ids, kwargs, stop, stream = generation_request(engine, body, chat)
    rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
    created, kind = int(time.time()), "chat.completion" if chat else "text_completion"
    if stream:
        if engine.pending >= engine.limits.max_pending:
            engine.admit()  # raises Busy: refused with a 429 before the stream starts
        return StreamingResponse(_stream(engine, request, ids, kwargs, stop, rid, created, chat),
                                 media_type="text/event-stream")
    engine.admit()
    try:
        new = await engine.run(engine.complete_ids, ids, kwargs)
    finally:
        engine.release()
    text, stopped = cut_at_stop(engine.gem.tokenizer.decode(new, skip_special_tokens=True), stop)
    finish = "stop" if stopped or len(new) < kwargs["max_new_tokens"] else "length"
    usage = {"prompt_tokens": len(ids), "completion_tokens": len(new), "total_tokens": len(ids) + len(new)}
    choice = ({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish} if chat
              else {"index": 0, "text": text, "logprobs": None, "finish_reason": finish})
    return {"id": rid, "object": kind, "created": created, "model": engine.name, "choices": [choice],
            "usage": usage}


async def _stream(engine, request, ids, kwargs, stop, rid, created, chat):
    """Server-sent events, one chunk per text piece, then [DONE]. A client that goes away stops
    the generation at its next token (and frees the model)."""
    loop = asyncio.get_running_loop()
    pieces: asyncio.Queue = asyncio.Queue()
    cancel = threading.Event()
    engine.pending += 1  # counted in until the worker has finished this generation
    job = loop.run_in_executor(engine.worker, engine.stream_ids, ids, kwargs,
                               lambda p: loop.call_soon_threadsafe(pieces.put_nowait, p), cancel)
    job.add_done_callback(lambda _: engine.release())
    kind = "chat.completion.chunk" if chat else "text_completion"

    def chunk(delta: str | None, finish: str | None = None) -> str:
        if chat:
            choice = {"index": 0, "delta": {} if delta is None else {"content": delta}, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": delta or "", "logprobs": None, "finish_reason": finish}
        return "data: " + json.dumps({"id": rid, "object": kind, "created": created, "model": engine.name,
                                      "choices": [choice]}) + "\n\n"

    text, finish = "", "length"
    try:
        if chat:
            yield "data: " + json.dumps({"id": rid, "object": kind, "created": created, "model": engine.name,
                                         "choices": [{"index": 0, "delta": {"role": "assistant"},
                                                      "finish_reason": None}]}) + "\n\n"
        while True:
            piece = await pieces.get()
            if piece is None or isinstance(piece, BaseException):
                break
            if await request.is_disconnected():
                break
            before = len(text)
            text, stopped = cut_at_stop(text + piece, stop)
            if len(text) > before:
                yield chunk(text[before:])
            if stopped:
                finish = "stop"
                break
        n_new = len(engine.gem.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else 0
        if finish != "stop" and n_new < kwargs["max_new_tokens"]:
            finish = "stop"
        yield chunk(None, finish)
        yield "data: [DONE]\n\n"
    finally:
        cancel.set()  # the client went away, a stop string matched, or the stream ended: stop generating


async def completions(request: Request):
    return await generate(request, chat=False)


async def chat_completions(request: Request):
    return await generate(request, chat=True)


async def embed_and_generate(request: Request):
    """GEM's extension: one prefill of `document` gives its embedding and the cache that the
    answer to `prompt` continues from (the answer equals plain generation on document + prompt)."""
    engine = request.app.state.engine
    body = await body_of(request)
    document = _field(body, "document", str, required=True)
    prompt = _field(body, "prompt", str, required=True)
    if not document.strip() or not prompt.strip():
        raise BadRequest("'document' and 'prompt' must hold text", "document" if not document.strip() else "prompt")
    counts = engine.check_texts([document], "document")
    max_tokens = engine.check_max_tokens(_field(body, "max_tokens", int, 32))
    engine.admit()
    try:
        t = time.perf_counter()
        emb, answer = await engine.run(engine.embed_and_generate, document, prompt, max_tokens)
        seconds = time.perf_counter() - t
    finally:
        engine.release()
    return {"object": "gem.embed_and_generate", "model": engine.name, "pooling": engine.pooling,
            "embedding": [float(x) for x in emb], "text": answer, "seconds": round(seconds, 4),
            "usage": {"prompt_tokens": counts[0] + engine.token_count(prompt)}}

"""`lab serve` under load, measured side by side in one run.

    python -m bench.serve [--model gem-smollm2-135m] [--seconds 60] [--clients 16]

1. Batching: 64 one-text embedding requests sent by 16 concurrent clients vs the same 64 sent one
   at a time: texts per second each way, and the ratio.
2. The one-prefill extension: /v1/gem/embed_and_generate on the app's default document and question
   vs /v1/embeddings on the document then /v1/completions on document + question (the same
   tokens, 16 new): seconds each way (median of 3 after a warm-up), and the speed-up.
3. Load: `--clients` clients for `--seconds` seconds, each cycling embeddings / completion /
   streamed completion / one-prefill requests through the official `openai` client (the extension
   through httpx): requests answered, errors, latency median and p90.
The server runs in this process on a free loopback port.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from .common import news_sentences


def _start(model: str):
    from lab.serve import Engine, Limits
    from lab.serve.background import BackgroundServer
    from lab.weights import load

    return BackgroundServer(Engine(load(model, dtype="float32"), model, Limits(max_pending=256)))


def batching(server, clients: int) -> dict:
    from openai import OpenAI

    texts = news_sentences(64)
    client = OpenAI(base_url=server.url, api_key="-", max_retries=0, timeout=600)
    client.embeddings.create(model=server.engine.name, input=texts[:2])  # warm-up
    t = time.perf_counter()
    for text in texts:
        client.embeddings.create(model=server.engine.name, input=[text])
    one = time.perf_counter() - t
    before = len(server.app.state.serving["batcher"].batches)
    t = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(lambda x: client.embeddings.create(model=server.engine.name, input=[x]), texts))
    together = time.perf_counter() - t
    sizes = server.app.state.serving["batcher"].batches[before:]
    return {"texts": len(texts), "one_at_a_time_texts_per_s": round(len(texts) / one, 1),
            "concurrent_texts_per_s": round(len(texts) / together, 1), "speedup": round(one / together, 2),
            "encode_calls": len(sizes), "mean_texts_per_call": round(sum(sizes) / len(sizes), 1)}


def one_prefill(server, new_tokens: int = 16) -> dict:
    from lab.app.ui import DOCUMENT

    question = " Question: What did Marie Curie research? Answer:"
    url, name, gem = server.url, server.engine.name, server.engine.gem
    room = server.engine.limits.max_input_tokens - len(gem.text_ids(question)) - 2
    document = gem.tokenizer.decode(gem.text_ids(DOCUMENT)[:room])  # the whole of it for the shipped model

    def shared():
        httpx.post(url + "/gem/embed_and_generate", timeout=600,
                   json={"document": document, "prompt": question, "max_tokens": new_tokens}).raise_for_status()

    def separate():
        httpx.post(url + "/embeddings", timeout=600, json={"model": name, "input": document}).raise_for_status()
        httpx.post(url + "/completions", timeout=600, json={"model": name, "prompt": document + question,
                                                           "max_tokens": new_tokens}).raise_for_status()

    def median(fn):
        fn()
        runs = []
        for _ in range(3):
            t = time.perf_counter()
            fn()
            runs.append(time.perf_counter() - t)
        return statistics.median(runs)

    s, p = median(separate), median(shared)
    tokens = len(gem.text_ids(document))
    return {"document_tokens": tokens, "separate_s": round(s, 3), "one_prefill_s": round(p, 3),
            "speedup": round(s / p, 2)}


def load(server, clients: int, seconds: float) -> dict:
    from openai import OpenAI

    texts = news_sentences(200)
    deadline = time.monotonic() + seconds
    name = server.engine.name

    def client_loop(i):
        client = OpenAI(base_url=server.url, api_key="-", max_retries=0, timeout=600)
        lat, errors, n = [], 0, 0
        while time.monotonic() < deadline:
            kind = (i + n) % 4
            t = time.perf_counter()
            try:
                if kind == 0:
                    client.embeddings.create(model=name, input=texts[(i * 7 + n) % 200: (i * 7 + n) % 200 + 4])
                elif kind == 1:
                    client.completions.create(model=name, prompt=texts[n % 200], max_tokens=8, temperature=0)
                elif kind == 2:
                    "".join(c.choices[0].text for c in client.completions.create(
                        model=name, prompt=texts[n % 200], max_tokens=8, temperature=0, stream=True))
                else:
                    httpx.post(server.url + "/gem/embed_and_generate", timeout=600, json={
                        "document": texts[n % 200], "prompt": " In short,", "max_tokens": 8}).raise_for_status()
                lat.append(time.perf_counter() - t)
            except Exception:
                errors += 1
            n += 1
        return lat, errors

    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(client_loop, range(clients)))
    lat = sorted(x for r in results for x in r[0])
    return {"clients": clients, "seconds": seconds, "answered": len(lat), "errors": sum(r[1] for r in results),
            "latency_median_s": round(statistics.median(lat), 3) if lat else None,
            "latency_p90_s": round(lat[int(0.9 * (len(lat) - 1))], 3) if lat else None,
            "pending_after": server.engine.pending}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="gem-smollm2-135m")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--seconds", type=float, default=60)
    args = p.parse_args()
    server = _start(args.model)
    try:
        out = {"model": args.model, "batching": batching(server, args.clients), "one_prefill": one_prefill(server),
               "load": load(server, args.clients, args.seconds)}
    finally:
        server.stop()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

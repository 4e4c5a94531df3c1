"""`lab serve`: a real server on a free port, driven with the official `openai` client.

The model is configured like the shipped one (`shipped_like_gem`: k = 5, sink, 384-d readout
head); embeddings must equal `encode`, completions `generate` (greedy), streams the same text.
"""

import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from lab.serve import Engine, Limits
from lab.serve.api import build_app
from lab.serve.background import BackgroundServer as Server

from .conftest import shipped_like_gem

CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
TEXTS = ["a cat on a mat", "stocks fell sharply today", "rain again in the north", "x"]


@pytest.fixture(scope="module")
def gem():
    g = shipped_like_gem(max_length=128)
    g.tokenizer.chat_template = CHAT_TEMPLATE
    return g


@pytest.fixture(scope="module")
def server(gem):
    s = Server(Engine(gem, "gem-tiny", Limits(max_inputs=8, max_tokens=24, max_pending=16)))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=60)


def test_models_states_the_pooling_and_width(client, server):
    models = httpx.get(server.url + "/models").json()["data"]
    assert [m.id for m in client.models.list().data] == ["gem-tiny"]
    assert models[0]["pooling"] == "gem" and models[0]["embedding_dim"] == 384 and models[0]["gem"]["k"] == 5


def test_embeddings_equal_encode(client, gem):
    got = client.embeddings.create(model="gem-tiny", input=TEXTS)  # the client asks for base64
    np.testing.assert_allclose(np.array([d.embedding for d in got.data]), gem.encode(TEXTS), atol=1e-5)
    plain = httpx.post(str(client.base_url) + "embeddings", json={"input": TEXTS[0], "encoding_format": "float"}).json()
    assert plain["pooling"] == "gem" and plain["usage"]["prompt_tokens"] == len(gem.text_ids(TEXTS[0]))
    np.testing.assert_allclose(plain["data"][0]["embedding"], gem.encode([TEXTS[0]])[0], atol=1e-5)


def test_concurrent_embedding_requests_are_batched_and_unchanged(client, server, gem):
    before = len(server.app.state.serving["batcher"].batches)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda t: client.embeddings.create(model="gem-tiny", input=[t]), TEXTS * 4))
    got = np.array([r.data[0].embedding for r in results])
    np.testing.assert_allclose(got, gem.encode(TEXTS * 4), atol=1e-5)
    sizes = server.app.state.serving["batcher"].batches[before:]
    assert sum(sizes) == 16 and max(sizes) > 1, f"requests were merged into encode calls: {sizes}"


def test_completions_and_chat_equal_generate_and_stream_the_same(client, gem):
    prompt = "Once upon a time"
    out = client.completions.create(model="gem-tiny", prompt=prompt, max_tokens=12, temperature=0)
    assert out.choices[0].text == gem.generate(prompt, max_new_tokens=12)
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model="gem-tiny", prompt=prompt, max_tokens=12, temperature=0, stream=True))
    assert streamed == out.choices[0].text
    chat = client.chat.completions.create(model="gem-tiny", messages=[{"role": "user", "content": "hello"}],
                                          max_tokens=10, temperature=0)
    assert chat.choices[0].message.content == gem.generate("hello", max_new_tokens=10, chat=True)
    parts = [c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="gem-tiny", messages=[{"role": "user", "content": "hello"}], max_tokens=10, temperature=0, stream=True)]
    assert "".join(parts) == chat.choices[0].message.content
    assert out.usage.prompt_tokens == len(gem.prompt_ids(prompt))


def test_the_one_prefill_extension_equals_two_passes(server, gem):
    doc, prompt = "The river runs past the mill to the sea.", " Where does it run? It runs"
    r = httpx.post(server.url + "/gem/embed_and_generate", json={"document": doc, "prompt": prompt, "max_tokens": 8},
                   timeout=60).json()
    np.testing.assert_allclose(r["embedding"], gem.encode([doc])[0], atol=1e-5)
    import torch

    ids = gem.bos + gem.text_ids(doc) + gem.text_ids(prompt)
    assert r["text"] == gem.tokenizer.decode(gem.generate_ids(torch.tensor([ids]), max_new_tokens=8)[0],
                                             skip_special_tokens=True)


@pytest.mark.parametrize("path, body, status, words", [
    ("/embeddings", {"input": ["t"] * 9}, 400, "9 inputs in one request; the limit is 8"),
    ("/embeddings", {"input": "word " * 400}, 400, "tokens; the limit is"),
    ("/embeddings", {"input": ""}, 400, "empty string"),
    ("/embeddings", {"input": [1, 2, 3]}, 400, "token arrays are not accepted"),
    ("/embeddings", {"input": "a", "dimensions": 64}, 400, "have 384 dimensions"),
    ("/embeddings", {"input": "a", "model": "gpt-4"}, 400, "is not served here"),
    ("/embeddings", {"input": "a", "pooling": "echo"}, 400, "pooling 'echo' is not available"),
    ("/completions", {"prompt": "hi", "max_tokens": 25}, 400, "max_tokens=25; the limit is 24"),
    ("/completions", {"prompt": "hi", "n": 2}, 400, "n > 1 is not supported"),
    ("/completions", {"prompt": ""}, 400, "'prompt' must be a non-empty string"),
    ("/chat/completions", {"messages": "hi"}, 400, "'messages' must be a non-empty list"),
    ("/gem/embed_and_generate", {"document": "a"}, 400, "'prompt' is required"),
])
def test_every_error_is_openai_style_and_names_the_fault(server, path, body, status, words):
    r = httpx.post(server.url + path, json=body, timeout=30)
    assert r.status_code == status and words in r.json()["error"]["message"], r.text
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_a_full_queue_is_refused_with_429(gem):
    from fastapi.testclient import TestClient

    engine = Engine(gem, "gem-tiny", Limits(max_pending=0))
    with TestClient(build_app(engine)) as http:
        r = http.post("/v1/embeddings", json={"input": "a"})
        assert r.status_code == 429 and r.json()["error"]["code"] == "queue_full" and r.headers["retry-after"] == "1"
        r = http.post("/v1/completions", json={"prompt": "a", "stream": True})
        assert r.status_code == 429
        assert http.post("/v1/embeddings", content=b"{not json").json()["error"]["message"].startswith("the request body")


def test_an_interrupted_stream_does_not_wedge_the_server(server, client, gem):
    with httpx.stream("POST", server.url + "/completions", timeout=60,
                      json={"prompt": "Once upon a time", "max_tokens": 24, "stream": True}) as r:
        first = next(r.iter_lines())
        assert first.startswith("data: ") and json.loads(first[6:])["object"] == "text_completion"
    # the client is gone: the generation stops at its next token and frees the model
    deadline = time.monotonic() + 30
    while server.engine.pending:
        assert time.monotonic() < deadline, "the abandoned stream still holds the model"
        time.sleep(0.05)
    out = client.completions.create(model="gem-tiny", prompt="hi", max_tokens=4, temperature=0)
    assert out.choices[0].text == gem.generate("hi", max_new_tokens=4)


def test_a_base_model_serves_with_mean_pooling_stated():
    from fastapi.testclient import TestClient

    from lab.weights import load

    base = load("tiny-smollm2", dtype="float32")
    with TestClient(build_app(Engine(base, "tiny-smollm2"))) as http:
        assert http.get("/v1/models").json()["data"][0]["pooling"] == "mean"
        r = http.post("/v1/embeddings", json={"input": TEXTS[:2], "encoding_format": "float"}).json()
        assert r["pooling"] == "mean"
        np.testing.assert_allclose([d["embedding"] for d in r["data"]], base.encode(TEXTS[:2]), atol=1e-5)
        assert "pooling 'gem' is not available" in http.post("/v1/embeddings", json={"input": "a", "pooling": "gem"}).text


def test_shutdown_is_graceful(gem):
    s = Server(Engine(gem, "gem-tiny"))
    r = httpx.post(s.url + "/embeddings", json={"input": "a", "encoding_format": "float"}, timeout=30)
    assert r.status_code == 200
    s.stop()
    assert not s.thread.is_alive() and s.engine.worker._shutdown


def test_the_cli_server_stops_cleanly_on_ctrl_c():
    """`python -m lab serve` answers, then one SIGINT shuts it down gracefully: exit 0, no traceback."""
    import signal
    import subprocess
    import sys

    from lab.serve.background import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "lab", "serve", "--model", "tiny-smollm2", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.poll() else "slow"
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0 and "Application shutdown complete" in out and "Traceback" not in out, out[-2000:]

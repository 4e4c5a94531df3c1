"""The app: handlers called directly, bad input, the Blocks' API, 8 concurrent clients, a real browser.

Models are tiny (built in code) and configured like the shipped pair: the base is `tiny-smollm2`
(SmolLM2's tokens, no BOS), the GEM model a checkpoint of it with the shipped checkpoint's k, sink
token and readout head (`shipped_like_gem`); a BOS family (`tiny-llama`) is checked too.
"""

import os
import shutil
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from lab.app import handlers as h
from lab.corpora.eval_sets import build_eval_data
from lab.corpora.textsets import MAX_TEXTS
from lab.weights.checkpoints import save_checkpoint

from .conftest import fp32_app_session, shipped_gem_config, shipped_like_gem, tiny_gem

ROOT = Path(__file__).resolve().parents[1]
ARTEFACTS = ROOT / "test-artifacts"
TEXTS = "a cat on a mat\na dog in the fog\nstocks fell sharply\nbonds rose today\nthe sun is hot\nrain again"


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    build_eval_data()
    ckpt = save_checkpoint(shipped_like_gem(max_length=128), tmp_path_factory.mktemp("app") / "gem")
    s = fp32_app_session(ckpt)  # the same verdicts on every CPU
    s.models()
    return s


def test_the_app_runs_what_ships(session):
    gem = session.models()[1].gem_config
    shipped = shipped_gem_config()
    assert (gem.k, gem.sink_token, gem.readout_head, gem.readout_dim) == \
        (shipped.k, shipped.sink_token, shipped.readout_head, shipped.readout_dim)
    from lab.app.ui import intro

    text = intro(session)  # the page tells the story of the model it shows
    assert f"{shipped.k} special tokens" in text and shipped.sink_token in text and "readout head" in text
    assert "one pass over a document gives its embedding" in text


def test_embeddings_maps_are_cached_and_deterministic(session):
    a = h.embeddings_view(session, "paste", pasted=TEXTS)
    assert len(a["map_base"].data[0].x) == 6 and "6 texts" in a["info"]
    b = h.embeddings_view(session, "paste", pasted=TEXTS)
    assert np.allclose(a["map_gem"].data[0].x, b["map_gem"].data[0].x)
    r = h.embeddings_view(session, "bundled", set_name="BBC headlines (500, 5 topics)")
    assert "500 texts with labels" in r["info"] and len(r["map_gem"].data) == 5, "one trace per topic"


def test_search_highlights_the_top_k_on_both_maps(session):
    r = h.search(session, "stocks fell sharply", "paste", pasted=TEXTS, k=3)
    for name in ("map_base", "map_gem"):
        traces = {t.name: t for t in r[name].data}
        assert list(traces["top-k"].text) == ["1", "2", "3"] and "query" not in traces, "no made-up query position"
        assert traces["top-k"].hovertext[0].startswith("#1: ")


def test_heatmaps_group_texts_by_label_and_fit_the_colour_scale(session):
    r = h.embeddings_view(session, "bundled", set_name="BBC headlines (500, 5 topics)")
    heat = r["heat_gem"].data[0]
    labels = [y.split("[", 1)[1].split("]", 1)[0] for y in heat.y]
    assert len(labels) == 40 and labels == sorted(labels), "texts sorted by topic: blocks on the diagonal"
    z = np.array(heat.z)
    off = z[~np.eye(len(z), dtype=bool)]
    assert heat.zmin >= off.min() - 1e-9 and heat.zmax <= 1.0 and heat.zmin > -1.0


def _base_grid_lines_up(r, k: int):
    base, gem = r["base"].data[0], r["gem"].data[0]
    assert list(base.x) == list(gem.x), "both grids are drawn on the GEM row's tokens"
    z = np.array(base.z, dtype=float)
    s_cols = [i for i, t in enumerate(gem.x) if "gem_" in t]
    assert len(s_cols) == k and np.isnan(z[:, s_cols]).all(), "the base model has no S"
    return z


def test_attention_grids_line_up_and_long_prompts_are_cut(session):
    r = h.attention_view(session, "a short text here", split=3)  # default: all of the model's S
    z = _base_grid_lines_up(r, shipped_gem_config().k)
    assert np.isnan(z[:, 0]).all() and np.isnan(z[0]).all(), "the sink is GEM's; the base row has none"
    assert not np.isnan(z[1, 1]), "the base model's own first token"
    assert "on the sink" in r["info"]
    *_, (_, _, timing) = h.generate_side_by_side(session, "word " * 700, 2)
    assert "only the first 512 were used" in timing


def test_attention_grids_line_up_for_a_family_with_bos(tmp_path):
    ckpt = save_checkpoint(tiny_gem("llama", k=2, max_length=128), tmp_path / "gem")
    s = h.Session("tiny-llama", str(ckpt))
    r = h.attention_view(s, "hello world, this is a test", split=5, k=2, layer=-1, head=1)
    z = _base_grid_lines_up(r, 2)
    assert not np.isnan(z[0, 0]), "both rows start with the tokenizer's own BOS"


def test_bundled_text_sets_are_decoded_correctly(session):
    from lab.corpora.eval_sets import repair_latin1_reading
    from lab.corpora.textsets import load_bundled

    assert repair_latin1_reading("cost \u00c2\u00a36.2bn") == "cost \u00a36.2bn"
    assert repair_latin1_reading("caf\u00e9 \u2014 ok") == "caf\u00e9 \u2014 ok", "real text is left alone"
    leads = load_bundled("BBC article leads (300, 5 topics)").texts
    assert not any("\u00c2\u00a3" in t for t in leads)


def test_search_ranks_an_exact_copy_first(session):
    r = h.search(session, "stocks fell sharply", "paste", pasted=TEXTS, k=3)
    assert r["gem"][0][2] == "stocks fell sharply" and r["gem"][0][1] == pytest.approx(1.0, abs=1e-4)
    assert r["base"][0][2] == "stocks fell sharply" and len(r["base"]) == 3


def test_attention_generation_reconstruction_embed_and_generate(session):
    r = h.attention_view(session, "hello world, this is a test", split=5, k=2, layer=-1, head=1)
    assert r["mask"].data[0].z.shape[0] == len(r["gem"].data[0].x)
    _base_grid_lines_up(r, 2)
    outs = list(h.generate_side_by_side(session, "hello", 6))
    base, gem = session.models()
    assert outs[-1][0] == base.generate("hello", 6) and outs[-1][1] == gem.generate("hello", 6)
    info = h.reconstruct(session, "hello there")["info"]
    assert "Decoded" in info and f"the cache of the {session.models()[1].gem_config.k} special token" in info
    assert "stopped" in info or "did not stop" in info
    r = h.embed_and_answer(session, "a document about cats", " question?", 6)
    assert "same answer and embedding: yes" in r["info"]


@pytest.mark.parametrize("call, message", [
    (lambda s: h.embeddings_view(s, "paste", pasted="   "), "needs at least 2"),
    (lambda s: h.search(s, "", "paste", pasted=TEXTS), "query is empty"),
    (lambda s: h.attention_view(s, ""), "text is empty"),
    (lambda s: h.attention_view(s, "abc", k=9), "k=9"),
    (lambda s: h.reconstruct(s, None), "text is empty"),
    (lambda s: list(h.generate_side_by_side(s, "hi", 10_000)), "between 1 and"),
    (lambda s: h.embeddings_view(s, "upload"), "no file uploaded"),
])
def test_bad_input_names_the_problem(session, call, message):
    with pytest.raises(ValueError, match=message):
        call(session)


def test_uploads(session, tmp_path):
    big = tmp_path / "big.txt"
    big.write_text("\n".join(f"line number {i}" for i in range(10_000)))
    r = h.embeddings_view(session, "upload", upload=str(big))
    assert any(f"only the first {MAX_TEXTS:,}" in w for w in r["warnings"]) and f"{MAX_TEXTS} texts" in r["info"]
    bad = tmp_path / "x.pdf"
    bad.write_bytes(b"%PDF-1.4")
    with pytest.raises(ValueError, match="unsupported file type .pdf"):
        h.embeddings_view(session, "upload", upload=str(bad))
    csv = tmp_path / "t.csv"
    csv.write_text("text,label\nred apples,fruit\ngreen pears,fruit\nfast cars,vehicle\n")
    assert "with labels" in h.embeddings_view(session, "upload", upload=str(csv))["info"]
    nocol = tmp_path / "n.csv"
    nocol.write_text("sentence\na\nb\n")
    with pytest.raises(ValueError, match="needs a 'text' column"):
        h.embeddings_view(session, "upload", upload=str(nocol))


def test_long_text_and_special_token_strings_warn(session):
    r = h.search(session, "x " * 700 + "<|gem_0|>", "paste", pasted=TEXTS)
    assert any("tokens; only the first" in w for w in r["warnings"])
    assert any("special-token strings" in w for w in r["warnings"])


def test_picking_a_base_model_as_gem_is_refused_and_keeps_the_old_models(session):
    before = session.gem
    with pytest.raises(ValueError, match="not a GEM checkpoint"):
        session.pick("tiny-smollm2", "tiny-smollm2")
    assert session.gem is before


def test_long_inputs_are_cut_and_the_one_prefill_check_compares_what_was_read(session):
    _, gem = session.models()
    doc = "the cat sat on the mat. " * 40  # > the model's max_length (128 here) of tokens
    question = " and why? " * 60  # > MAX_QUESTION_TOKENS
    r = h.embed_and_answer(session, doc, question, 4)
    assert any("document had" in w and "only the first" in w for w in r["warnings"])
    assert any("question had" in w and f"only the first {h.MAX_QUESTION_TOKENS}" in w for w in r["warnings"])
    assert "same answer and embedding: yes" in r["info"], "both paths read the same cut document"
    rec = h.reconstruct(session, "word " * 300)
    # the input is cut to MAX_RECONSTRUCT_TOKENS; the decode may run RECONSTRUCT_SLACK past it (the safeguard)
    assert len(gem.text_ids(rec["text"])) <= h.MAX_RECONSTRUCT_TOKENS + h.RECONSTRUCT_SLACK + 2 and rec["warnings"]


def test_the_picker_loads_only_known_models_and_nearby_folders(session, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine").mkdir()
    assert h.pickable_problem("tiny-smollm2") is None and h.pickable_problem("gem-smollm2-135m") is None
    assert h.pickable_problem("mine") is None, "a folder under the working directory"
    assert "outside the working directory" in h.pickable_problem("../..")
    assert h.pickable_problem("../..", allow_any_folder=True) is None
    assert "unknown model 'nope'" in h.pickable_problem("nope")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert "--online" in h.pickable_problem("someone/some-model")
    before = session.gem
    with pytest.raises(ValueError, match="outside the working directory"):
        session.pick("tiny-smollm2", "../..")
    assert session.gem is before


def test_errors_reach_the_page_as_messages_that_name_the_fix():
    from lab.app.ui import user_message
    from lab.weights.registry import get_spec

    with pytest.raises(KeyError) as e:
        get_spec("nope")
    assert user_message(e.value).startswith("unknown model 'nope'")
    assert "--online" in user_message(OSError("We couldn't connect to 'https://huggingface.co'"))
    assert user_message(RuntimeError("cannot load GEM checkpoint: x is damaged")).endswith("damaged")


def test_app_py_is_offline_by_default_and_warns_beyond_the_loopback(monkeypatch, caplog):
    import importlib.util

    spec = importlib.util.spec_from_file_location("app_main", ROOT / "app.py")
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    app.apply_network_settings(app.parse_args([]))
    assert os.environ["HF_HUB_OFFLINE"] == "1" and not caplog.records
    monkeypatch.delenv("HF_HUB_OFFLINE")
    app.apply_network_settings(app.parse_args(["--online", "--host", "0.0.0.0"]))
    assert "HF_HUB_OFFLINE" not in os.environ
    assert any("no password" in r.getMessage() for r in caplog.records)


def test_the_map_cache_is_bounded(tmp_path):
    from lab.viz.maps import evict_maps

    for i in range(5):
        f = tmp_path / f"{i}.npz"
        f.write_bytes(b"x" * 1000)
        os.utime(f, (i, i))  # 4 is the newest
    assert evict_maps(tmp_path, keep_bytes=2500) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["3.npz", "4.npz"]


API = {"load_models", "embeddings", "search", "attention", "generate", "reconstruct", "embed_and_generate",
       "mask_builder", "costs"}


def test_every_event_has_an_api_name(session):
    from lab.app.ui import build_demo

    demo = build_demo(session)
    names = {d.get("api_name") for d in demo.config["dependencies"]}
    assert API <= names
    # the events share the models: one queue slot for all of them, never two handlers side by side
    # (8 clients hit a lazy-import deadlock and a backend switch mid-forward when they did)
    slots = {f.api_name: (f.concurrency_id, f.concurrency_limit) for f in demo.fns.values() if f.api_name in API}
    assert set(slots) == API
    assert set(slots.values()) == {("models", 1)}, slots


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(session):
    from lab.app.ui import build_demo

    demo = build_demo(session)
    port = _free_port()
    from lab.app.ui import LAUNCH

    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **LAUNCH)
    yield f"http://127.0.0.1:{port}/"
    demo.close()


def test_uploads_over_the_limit_are_refused_before_they_are_stored(server, tmp_path):
    import tempfile

    import httpx

    from lab.corpora.textsets import MAX_UPLOAD_BYTES

    temp = Path(os.environ.get("GRADIO_TEMP_DIR", Path(tempfile.gettempdir()) / "gradio"))
    before = set(temp.rglob("*")) if temp.exists() else set()
    big = b"a line of text\n" * (MAX_UPLOAD_BYTES // 15 + 10)
    r = httpx.post(server + "gradio_api/upload", files={"files": ("big.txt", big, "text/plain")}, timeout=60)
    assert r.status_code == 413, r.text[:200]
    after = set(temp.rglob("*")) if temp.exists() else set()
    assert not [p for p in after - before if p.name == "big.txt"], "nothing of it was stored"


def test_server_binds_to_localhost_and_survives_bad_input(server):
    from gradio_client import Client

    assert server.startswith("http://127.0.0.1:")
    client = Client(server, verbose=False)
    with pytest.raises(Exception, match="empty"):
        client.predict("", 8, api_name="/generate")
    result = client.predict("hello", 4, api_name="/generate")  # still serving
    assert isinstance(result[0], str)


@pytest.mark.load
def test_eight_concurrent_clients(server):
    """8 gradio_client clients call the app for LOAD_SECONDS (default 60) through the queue, every
    call answered (`make test-load`; a load check, not part of the default suite)."""
    from gradio_client import Client

    seconds = float(os.environ.get("GEM_LAB_LOAD_SECONDS", "60"))
    deadline = time.monotonic() + seconds
    calls = [("/generate", ("once upon a time", 8)),
             ("/search", ("stocks", "paste", None, TEXTS, None, 3, "mean")),
             ("/attention", ("a short text", -1, 1, -1, 0)),
             ("/reconstruct", ("hello there", 1))]

    def client_loop(i):
        client, n = Client(server, verbose=False), 0
        while time.monotonic() < deadline:
            api, args = calls[(i + n) % len(calls)]
            client.predict(*args, api_name=api)
            n += 1
        return n

    t0 = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        done = list(pool.map(client_loop, range(8)))  # a failed call raises here
    print(f"\n8 clients, {time.monotonic() - t0:.0f} s: {sum(done)} calls answered, none failed; per client {done}")
    assert all(n >= 1 for n in done), done
    assert isinstance(Client(server, verbose=False).predict("hello", 4, api_name="/generate")[0], str), \
        "still serving after the load"


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def test_browser_runs_every_preset_of_every_tab(server, session):
    """Headless Chromium opens the page and runs every preset of every tab on the shipped-like
    models, each checked against what the handler returns for the same input (so a preset that
    errors, or an output that never arrives, fails); every view is drawn when the page opens; the
    mask builder's switches rerun the leak check live; no error toast appears anywhere. The expected
    value is computed before the click: the app runs one handler at a time (its queue), and a handler
    called from here while the server runs one would share the models with it."""
    exe = _chromium()
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have Chromium: `make test` installs it with apt (apt-get install chromium)")
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium); `make test` installs it as root")
    from playwright.sync_api import expect, sync_playwright

    from lab.app.texts import COMPARE, DOCUMENT, QUESTION
    from lab.app.why import why_gem
    from lab.evaluation.generation import PRESET_PROMPTS

    slow = 120_000
    ARTEFACTS.mkdir(exist_ok=True)
    first = why_gem(session, DOCUMENT, QUESTION, COMPARE, 12)  # what the first view shows when the page opens
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(server, wait_until="load")

        def box(name):
            return page.get_by_label(name, exact=True).filter(visible=True)

        try:
            expect(box("answer")).to_have_value(first["answer"], timeout=slow)  # drawn on open
            expect(page.get_by_text(first["ranked"][0][2], exact=True).filter(visible=True).first).to_be_visible()
            page.screenshot(path=str(ARTEFACTS / "app-first-view.png"), full_page=True)
            for question in (QUESTION, " Question: In which city did Pierre Curie die? Answer:"):
                page.get_by_text(question.strip(), exact=True).click()
                expect(box("question")).to_have_value(question, timeout=30_000)
                answer = why_gem(session, DOCUMENT, question, COMPARE, 12)["answer"]
                page.get_by_role("button", name="Embed and answer in one prefill").click()
                expect(box("answer")).to_have_value(answer, timeout=slow)
            page.wait_for_selector("text=one prefill:", timeout=slow)

            page.get_by_role("tab", name="Mask and attention").click()
            page.wait_for_selector('text="No leak."', timeout=slow)  # the builder, drawn on open
            page.wait_for_selector("text=text tokens;", timeout=slow)  # the attention view, drawn on open
            page.get_by_label("break it: the suffix may see the prefix").check()  # live: no button
            page.wait_for_selector('text="Leak."', timeout=slow)
            page.get_by_label("break it: the suffix may see the prefix").uncheck()
            page.get_by_label("gist").check()
            page.wait_for_selector('text="Different, but not a leak."', timeout=slow)
            page.get_by_label("gem", exact=True).check()
            page.wait_for_selector('text="No leak."', timeout=slow)
            for text, split in (("The cat sat on the mat because it was warm.", 6),
                                ("Paris is the capital of France. It is famous for the Eiffel Tower.", 8),
                                ("Stock markets fell sharply after the central bank raised interest rates.", -1)):
                page.get_by_text(text[:40], exact=False).first.click()
                expect(box("text")).to_have_value(text, timeout=30_000)
                info = h.attention_view(session, text, split, 0, -1, 0)["info"]
                page.get_by_role("button", name="Show").click()
                page.wait_for_selector(f"text={info.split(';')[0]};", timeout=slow)  # "N text tokens;"
                assert page.locator(".js-plotly-plot:visible").count() >= 4, "builder + mask + two attention maps"
            page.screenshot(path=str(ARTEFACTS / "app-attention.png"), full_page=True)

            page.get_by_role("tab", name="Embeddings").click()
            page.wait_for_selector("text=500 texts with labels", timeout=180_000)  # the default maps, drawn on open
            page.get_by_label("paste: one text per line").fill(TEXTS)  # the source switches to "paste" itself
            page.wait_for_function("() => [...document.querySelectorAll('input[type=radio]')]"
                                   ".some(r => r.value === 'paste' && r.checked)", timeout=30_000)
            page.get_by_role("button", name="Map").click()
            page.wait_for_selector("text=6 texts · embedded and mapped", timeout=slow)
            page.screenshot(path=str(ARTEFACTS / "app-embeddings.png"), full_page=True)
            for query in ("interest rates and the economy", "a new mobile phone", "the football season",
                          "the general election campaign", "a film wins an award"):
                page.get_by_text(query, exact=True).click()  # the preset fills the box (a server round trip)
                expect(page.get_by_label("semantic search: query")).to_have_value(query, timeout=30_000)
                _, cosine, _ = h.search(session, query, "paste", pasted=TEXTS, k=5)["gem"][0]  # GEM's best hit
                page.get_by_role("button", name="Search").click()
                expect(page.get_by_text(str(cosine), exact=True).filter(visible=True).first).to_be_visible(timeout=slow)
            page.wait_for_selector("text=top 5 for the query", timeout=slow)
            page.screenshot(path=str(ARTEFACTS / "app-search.png"), full_page=True)

            page.get_by_role("tab", name="Generation").click()
            for prompt in PRESET_PROMPTS:
                page.get_by_text(prompt, exact=True).click()
                expect(box("prompt (up to 512 tokens)")).to_have_value(prompt, timeout=30_000)
                expected = session.models()[1].generate(prompt, 32)
                page.get_by_role("button", name="Generate with both").click()
                expect(box("GEM")).to_have_value(expected, timeout=slow)
            for text in ("Paris is the capital and largest city of France.", "The cat sat on the mat."):
                page.get_by_text(text, exact=True).last.click()
                expect(box("text (≤ 64 tokens)")).to_have_value(text, timeout=30_000)
                expected = h.reconstruct(session, text)["text"]
                page.get_by_role("button", name="Reconstruct").click()
                expect(box("decoded from S")).to_have_value(expected, timeout=slow)
            page.wait_for_selector("text=The decoder saw only", timeout=slow)

            page.get_by_role("tab", name="What training buys and costs").click()
            page.wait_for_selector("text=emb. avg", timeout=slow)  # drawn on open, from results/
            page.wait_for_selector("text=At run time", timeout=slow)
            page.screenshot(path=str(ARTEFACTS / "app-costs.png"), full_page=True)
            assert page.locator(".toast-body.error").count() == 0, "no error toast"
        except Exception:
            page.screenshot(path=str(ARTEFACTS / "app-failure.png"), full_page=True)
            raise
        browser.close()
    assert (ARTEFACTS / "app-embeddings.png").stat().st_size > 10_000

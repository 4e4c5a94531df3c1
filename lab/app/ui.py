"""The Gradio app: base vs GEM, side by side. `build_demo(session)` returns the `gr.Blocks`.

Every event has an `api_name`, so `gradio_client` drives the same functions the page does:
/load_models, /embeddings, /search, /attention, /generate, /reconstruct, /embed_and_generate.
Bad input raises `gr.Error` (shown in the page; the server keeps serving); recoverable problems
(a cut text, a truncated upload) show as `gr.Warning` toasts.
"""

from __future__ import annotations

import functools
import logging

import gradio as gr

from ..corpora.textsets import bundled_sets
from ..gem.pooling import POOLINGS
from . import handlers as h

log = logging.getLogger(__name__)

BASE_POOLINGS = [p for p in POOLINGS if p != "gem"]
INTRO = """# GEM Lab — base vs GEM, side by side
The left model is the base LM; the right one is the same LM after GEM training: a special token
appended to a text gives its embedding, and the model still generates text as before.
[GEM, arXiv 2506.04344](https://arxiv.org/abs/2506.04344)"""


def _visible(fn):
    """Run a handler; user errors become `gr.Error`, handler warnings become `gr.Warning` toasts."""
    @functools.wraps(fn)
    def run(*args, **kwargs):
        try:
            out = fn(*args, **kwargs)
        except (ValueError, FileNotFoundError, TypeError) as e:
            raise gr.Error(str(e)) from None
        for w in out.get("warnings", []) if isinstance(out, dict) else []:
            gr.Warning(w)
        return out
    return run


def build_demo(session: h.Session | None = None) -> gr.Blocks:
    """The app: a models panel and one tab per part of GEM, all calling `lab.app.handlers`."""
    session = session or h.Session()
    with gr.Blocks(title="GEM Lab") as demo:
        gr.Markdown(INTRO)
        _models_panel(session)
        with gr.Tab("Embeddings"):
            _embeddings_tab(session)
        with gr.Tab("Attention"):
            _attention_tab(session)
        with gr.Tab("Generation"):
            _generation_tab(session)
        with gr.Tab("Embed + generate"):
            _embed_generate_tab(session)
    demo.queue(default_concurrency_limit=1, max_size=64)
    return demo


def _models_panel(session: h.Session) -> None:
    @_visible
    def load_models(base_name, gem_name):
        return {"status": session.pick(base_name, gem_name)}

    with gr.Accordion("Models", open=False):
        with gr.Row():
            base_choices, gem_choices = h.model_choices()
            base_name = gr.Dropdown(sorted({session.base_name, *base_choices}), value=session.base_name,
                                    allow_custom_value=True, label="base model (registry name or HF folder)")
            gem_name = gr.Dropdown(sorted({session.gem_name, *gem_choices}), value=session.gem_name,
                                   allow_custom_value=True, label="GEM model (shipped name, run or checkpoint folder)")
            load_btn = gr.Button("Load", variant="secondary")
        status = gr.Markdown(f"base: **{session.base_name}** · GEM: **{session.gem_name}**")
        load_btn.click(lambda b, g: load_models(b, g)["status"], [base_name, gem_name], status,
                       api_name="load_models")


def _embeddings_tab(session: h.Session) -> None:
    @_visible
    def embeddings(source, set_name, pasted, upload, pooling):
        r = h.embeddings_view(session, source, set_name, pasted, upload, pooling)
        return r["map_base"], r["map_gem"], r["heat_base"], r["heat_gem"], r["info"]

    @_visible
    def search(query, source, set_name, pasted, upload, k, pooling):
        r = h.search(session, query, source, set_name, pasted, upload, k, pooling)
        return r["base"], r["gem"]

    with gr.Row():
        source = gr.Radio(["bundled", "paste", "upload"], value="bundled", label="texts from")
        set_name = gr.Dropdown(bundled_sets(), value=bundled_sets()[0], label="bundled set")
        pooling = gr.Dropdown(BASE_POOLINGS, value="mean", label="base model pooling")
    with gr.Row():
        pasted = gr.Textbox(lines=4, label="paste: one text per line")
        upload = gr.File(file_types=[".txt", ".csv"], type="filepath",
                         label="upload: .txt (one per line) or .csv (text[, label])")
    map_btn = gr.Button("Map", variant="primary")
    emb_info = gr.Markdown()
    with gr.Row():
        map_base, map_gem = gr.Plot(label="base"), gr.Plot(label="GEM")
    with gr.Row():
        heat_base, heat_gem = gr.Plot(label="base similarity"), gr.Plot(label="GEM similarity")
    with gr.Row():
        query = gr.Textbox(label="semantic search: query", scale=4)
        k = gr.Number(5, label="top k", precision=0, minimum=1, maximum=50, scale=1)
        search_btn = gr.Button("Search", scale=1)
    with gr.Row():
        hits_base = gr.Dataframe(headers=["rank", "cosine", "text"], label="base", wrap=True)
        hits_gem = gr.Dataframe(headers=["rank", "cosine", "text"], label="GEM", wrap=True)
    map_btn.click(embeddings, [source, set_name, pasted, upload, pooling],
                  [map_base, map_gem, heat_base, heat_gem, emb_info], api_name="embeddings")
    search_btn.click(search, [query, source, set_name, pasted, upload, k, pooling], [hits_base, hits_gem],
                     api_name="search")


def _attention_tab(session: h.Session) -> None:
    @_visible
    def attention(text, split, k, layer, head):
        r = h.attention_view(session, text, split, k, layer, head)
        return r["mask"], r["base"], r["gem"], r["info"]

    att_text = gr.Textbox("The cat sat on the mat because it was warm.", label="text")
    with gr.Row():
        split = gr.Number(6, precision=0, label="split: tokens before S (-1 = S at the end)")
        att_k = gr.Number(1, precision=0, minimum=1, label="k special tokens")
        layer = gr.Number(-1, precision=0, label="layer (-1 = last)")
        head = gr.Number(0, precision=0, minimum=0, label="head")
        att_btn = gr.Button("Show", variant="primary")
    att_info = gr.Markdown()
    mask_plot = gr.Plot(label="GEM mask")
    with gr.Row():
        att_base, att_gem = gr.Plot(label="base attention"), gr.Plot(label="GEM attention")
    att_btn.click(attention, [att_text, split, att_k, layer, head], [mask_plot, att_base, att_gem, att_info],
                  api_name="attention")


def _generation_tab(session: h.Session) -> None:
    @_visible
    def reconstruct(text):
        r = h.reconstruct(session, text)
        return r["text"], r["info"]

    def generate(prompt, n):
        try:
            yield from h.generate_side_by_side(session, prompt, n)
        except ValueError as e:
            raise gr.Error(str(e)) from None

    prompt = gr.Textbox("The capital of France is", label="prompt")
    with gr.Row():
        n_new = gr.Slider(1, h.MAX_NEW_TOKENS, value=32, step=1, label="max new tokens")
        gen_btn = gr.Button("Generate with both", variant="primary")
    with gr.Row():
        out_base, out_gem = gr.Textbox(label="base", lines=5), gr.Textbox(label="GEM", lines=5)
    gen_timing = gr.Markdown()
    gen_btn.click(generate, [prompt, n_new], [out_base, out_gem, gen_timing], api_name="generate")
    gr.Markdown("### Reconstruction: decode a text from its special token alone")
    rec_text = gr.Textbox("Paris is the capital and largest city of France.", label="text (≤ 64 tokens)")
    rec_btn = gr.Button("Reconstruct")
    rec_out, rec_info = gr.Textbox(label="decoded from S"), gr.Markdown()
    rec_btn.click(reconstruct, rec_text, [rec_out, rec_info], api_name="reconstruct")


def _embed_generate_tab(session: h.Session) -> None:
    @_visible
    def embed_and_generate(document, question, n):
        r = h.embed_and_answer(session, document, question, n)
        return r["answer"], r["preview"], r["info"]

    doc = gr.Textbox("Marie Curie was a physicist and chemist who conducted pioneering research on "
                     "radioactivity. She was the first woman to win a Nobel Prize.", lines=5, label="document")
    question = gr.Textbox(" Question: What did Marie Curie research? Answer:", label="question")
    with gr.Row():
        eg_n = gr.Slider(1, h.MAX_NEW_TOKENS, value=24, step=1, label="max new tokens")
        eg_btn = gr.Button("Embed and answer in one prefill", variant="primary")
    eg_answer, eg_preview, eg_info = gr.Textbox(label="answer"), gr.Textbox(label="embedding"), gr.Markdown()
    eg_btn.click(embed_and_generate, [doc, question, eg_n], [eg_answer, eg_preview, eg_info],
                 api_name="embed_and_generate")

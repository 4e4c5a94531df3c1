"""The Gradio app: base vs GEM, side by side. `build_demo(session)` returns the `gr.Blocks`.

Every event has an `api_name`, so `gradio_client` drives the same functions the page does:
/load_models, /embed_and_generate, /mask_builder, /attention, /embeddings, /search, /generate,
/reconstruct, /costs. Bad input raises `gr.Error` (shown in the page; the server keeps serving);
recoverable problems (a cut text, a truncated upload) show as `gr.Warning` toasts. Every view is
drawn with its defaults when the page opens.
"""

from __future__ import annotations

import gradio as gr

from ..corpora.textsets import MAX_UPLOAD_BYTES
from . import handlers as h
from . import tabs
from .events import ONE_AT_A_TIME, user_message
from .texts import CAPTIONS, DEFAULT_SET, DOCUMENT, intro  # noqa: F401  (app.py, tests and bench read them here)

# demo.launch(**LAUNCH) in app.py and the tests: uploads over the limit are refused while they
# stream in, before anything is stored
LAUNCH = {"footer_links": ["api"], "max_file_size": MAX_UPLOAD_BYTES}


def build_demo(session: h.Session | None = None) -> gr.Blocks:
    """The app: a models panel, then the first view (why GEM: one prefill, embedding and answer) and
    one tab per part of GEM in teaching order, all calling `lab.app` handlers; every view is drawn
    when the page opens (one after another, in the models' queue slot)."""
    session = session or h.Session()
    # uploads (and Gradio's other temporary files) are deleted after 10 minutes and at shutdown
    with gr.Blocks(title="GEM Lab", delete_cache=(600, 600)) as demo:
        gr.Markdown(intro(session))
        _models_panel(session)
        on_open = []
        with gr.Tab("Why GEM · one prefill"):
            on_open += tabs.why_tab(session)
        with gr.Tab("1 · Mask and attention"):
            on_open += tabs.builder_section(session)
            on_open += tabs.attention_tab(session)
        with gr.Tab("2 · Embeddings"):
            on_open += tabs.embeddings_tab(session)
        with gr.Tab("3 · Generation and reconstruction"):
            on_open += tabs.generation_tab(session)
        with gr.Tab("4 · What training buys and costs"):
            on_open += tabs.costs_tab(session)
        event = None
        for fn, inputs, outputs in on_open:  # in page order: the first view is ready first
            event = (demo.load if event is None else event.then)(fn, inputs, outputs, **ONE_AT_A_TIME)
    demo.queue(default_concurrency_limit=1, max_size=64)  # the model events also share one slot (ONE_AT_A_TIME)
    return demo


def _models_panel(session: h.Session) -> None:
    def load_models(base_name, gem_name):
        try:
            return session.pick(base_name, gem_name)
        except Exception as e:  # shown in the page, naming the problem; the old models stay
            raise gr.Error(user_message(e)) from None

    with gr.Accordion("Models", open=False):
        with gr.Row():
            base_choices, gem_choices = h.model_choices()
            base_name = gr.Dropdown(sorted({session.base_name, *base_choices}), value=session.base_name,
                                    allow_custom_value=True, label="base model (registry name or HF folder)")
            gem_name = gr.Dropdown(sorted({session.gem_name, *gem_choices}), value=session.gem_name,
                                   allow_custom_value=True, label="GEM model (shipped name, run or checkpoint folder)")
            load_btn = gr.Button("Load", variant="secondary")
        status = gr.Markdown(f"base: **{session.base_name}** · GEM: **{session.gem_name}**")
        load_btn.click(load_models, [base_name, gem_name], status, api_name="load_models", **ONE_AT_A_TIME)

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

from ..corpora.textsets import MAX_UPLOAD_BYTES, bundled_sets
from ..gem.pooling import POOLINGS
from ..evaluation.generation import PRESET_PROMPTS
from . import handlers as h

log = logging.getLogger(__name__)

# Every event that uses the models shares one queue slot: handlers never run side by side (they share
# the two models, and the attention view switches a model's attention backend while it runs).
ONE_AT_A_TIME = {"concurrency_limit": 1, "concurrency_id": "models"}
# demo.launch(**LAUNCH) in app.py and the tests: uploads over the limit are refused while they
# stream in, before anything is stored
LAUNCH = {"footer_links": ["api"], "max_file_size": MAX_UPLOAD_BYTES}
BASE_POOLINGS = [p for p in POOLINGS if p != "gem"]
def intro(session: h.Session) -> str:
    """The page's first lines, from the GEM model being shown (its k, sink and readout head)."""
    cfg = session.gem.gem_config if session.gem is not None else None
    k = f"{cfg.k} special token{'s' if cfg.k > 1 else ''}" if cfg else "special tokens"
    read = ("their last-layer states, averaged" + (" and mapped by a small readout head," if cfg and cfg.readout_head
                                                   else ",") + " are the text's embedding") if cfg else \
        "their last-layer states are the text's embedding"
    sink = f" A sink token (`{cfg.sink_token}`) in front of every text gives attention a place to rest." \
        if cfg and cfg.sink_token else ""
    return f"""# GEM Lab — one model that embeds and answers
GEM appends {k} (S) to a text: {read}. Its mask lets S read the text and lets what follows S read
only S, so the same model still generates as before, and **one pass over a document gives its embedding
and the cache its answer continues from** (tab 4).{sink} Left: the base LM; right: the same LM after GEM
training. The tabs follow the course: the mask, embeddings, generation, then both at once.
[GEM, arXiv 2506.04344](https://arxiv.org/abs/2506.04344)"""

DEFAULT_SET = bundled_sets()[0]
DOCUMENT = (
    "Marie Curie was a Polish and naturalised-French physicist and chemist who conducted pioneering research "
    "on radioactivity. She was the first woman to win a Nobel Prize, the first person to win a Nobel Prize "
    "twice, and the only person to win a Nobel Prize in two scientific fields. Her husband, Pierre Curie, was "
    "a co-winner of her first Nobel Prize, making them the first married couple to win the Nobel Prize. "
    "She was born in Warsaw, in what was then the Kingdom of Poland, part of the Russian Empire. She studied "
    "at Warsaw's clandestine Flying University and began her practical scientific training in Warsaw. In "
    "1891, aged 24, she followed her elder sister Bronisława to study in Paris, where she earned her higher "
    "degrees and conducted her subsequent scientific work. In 1895 she married the French physicist Pierre "
    "Curie, and she shared the 1903 Nobel Prize in Physics with him and with the physicist Henri Becquerel "
    "for their pioneering work developing the theory of radioactivity, a term she coined. In 1906 Pierre "
    "Curie died in a Paris street accident. Marie won the 1911 Nobel Prize in Chemistry for her discovery "
    "of the elements polonium and radium, using techniques she invented for isolating radioactive isotopes. "
    "Under her direction, the world's first studies were conducted into the treatment of neoplasms by the "
    "use of radioactive isotopes. She founded the Curie Institute in Paris in 1920, and the Curie Institute "
    "in Warsaw in 1932; both remain major medical research centres.")
CAPTIONS = {
    "mask": "Rows are queries, columns keys; colour = the key's role where attention is allowed, white = blocked. "
            "Look for the suffix rows (green) that cannot see the prefix (blue): only S (red) connects them.",
    "attention": "Same tokens on both grids (the base model has no S: its S row and column are blank). Look at the "
                 "suffix rows of the GEM grid: how much of their attention lands on S?",
    "maps": "Each dot is a text, coloured by its label; nearby dots have similar embeddings. Look for topics "
            "that form separate islands on the GEM map but overlap on the base map.",
    "heat": "Cosine similarity of 40 texts sorted by label (colour scale fitted to the data). Topic blocks on the "
            "diagonal mean texts of one topic are closer to each other than to the rest.",
    "search": "The query's top-k texts (numbered rings) on both maps; good neighbours sit in one island of the "
              "query's topic. The query itself is not drawn: a map cannot place a new text without refitting it.",
    "generate": "Same prompt, greedy decoding: GEM training should leave the model's continuation sensible.",
    "reconstruct": "Decoded from the special tokens' key/value cache alone: the decoder never sees the text, "
                   "only S. Short texts often come back word for word, longer ones as their gist, and the "
                   "decoder may run on past the end. The shipped model's measured rates are in its model card "
                   "(checkpoints/gem-smollm2-135m/README.md).",
    "embed": "One pass over the document gives its embedding and the cache the answer continues from; "
             "the timing compares it with embedding and generating separately.",
}


def user_message(e: BaseException) -> str:
    """The message the page shows for an exception: the lab's own errors already name the problem
    and the fix; anything else is named with what to try."""
    if isinstance(e, KeyError):  # the registry's "unknown model ..." (str() would add quotes)
        return str(e.args[0]) if e.args else "unknown name"
    if isinstance(e, (ValueError, FileNotFoundError, FileExistsError, TypeError, RuntimeError)):
        return str(e)
    if isinstance(e, OSError):
        return (f"{e}. If this is a hub id: the app is offline unless started with --online; otherwise "
                f"check the folder's path and permissions")
    log.exception("unexpected error in a handler")
    return f"unexpected error ({type(e).__name__}: {e}); the server log has the details"


def _visible(fn):
    """Run a handler; user errors become `gr.Error`, handler warnings become `gr.Warning` toasts."""
    @functools.wraps(fn)
    def run(*args, **kwargs):
        try:
            out = fn(*args, **kwargs)
        except Exception as e:  # shown in the page, naming the problem; the server keeps serving
            raise gr.Error(user_message(e)) from None
        for w in out.get("warnings", []) if isinstance(out, dict) else []:
            gr.Warning(w)
        return out
    return run


def build_demo(session: h.Session | None = None) -> gr.Blocks:
    """The app: a models panel and one tab per part of GEM (in teaching order), all calling
    `lab.app.handlers`. The default text set's maps are drawn when the page opens."""
    session = session or h.Session()
    # uploads (and Gradio's other temporary files) are deleted after 10 minutes and at shutdown
    with gr.Blocks(title="GEM Lab", delete_cache=(600, 600)) as demo:
        gr.Markdown(intro(session))
        _models_panel(session)
        with gr.Tab("1 · Mask and attention"):
            _attention_tab(session)
        with gr.Tab("2 · Embeddings"):
            on_open = _embeddings_tab(session)
        with gr.Tab("3 · Generation and reconstruction"):
            _generation_tab(session)
        with gr.Tab("4 · Embed + generate"):
            _embed_generate_tab(session)
        demo.load(*on_open, **ONE_AT_A_TIME)
    demo.queue(default_concurrency_limit=1, max_size=64)  # the model events also share one slot (ONE_AT_A_TIME)
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
                       api_name="load_models", **ONE_AT_A_TIME)


def _embeddings_tab(session: h.Session):
    """Builds the tab; returns what `demo.load` runs when the page opens (the default maps)."""
    @_visible
    def embeddings(source, set_name, pasted, upload, pooling, progress=gr.Progress()):
        r = h.embeddings_view(session, source, set_name, pasted, upload, pooling,
                              progress=lambda f, d: progress(f, desc=d))
        return r["map_base"], r["map_gem"], r["heat_base"], r["heat_gem"], r["info"]

    @_visible
    def search(query, source, set_name, pasted, upload, k, pooling, progress=gr.Progress()):
        r = h.search(session, query, source, set_name, pasted, upload, k, pooling,
                     progress=lambda f, d: progress(f, desc=d))
        return r["base"], r["gem"], r["map_base"], r["map_gem"]

    with gr.Row():
        source = gr.Radio(["bundled", "paste", "upload"], value="bundled", label="texts from")
        set_name = gr.Dropdown(bundled_sets(), value=DEFAULT_SET, label="bundled set")
        pooling = gr.Dropdown(BASE_POOLINGS, value="mean", label="base model pooling")
    with gr.Row():
        pasted = gr.Textbox(lines=4, label="paste: one text per line")
        upload = gr.File(file_types=[".txt", ".csv"], type="filepath",
                         label="upload: .txt (one per line) or .csv (text[, label])")
    # pasting, uploading or picking a set switches the source (at once: outside the model queue)
    pasted.change(lambda t: "paste" if (t or "").strip() else "bundled", pasted, source, queue=False)
    upload.upload(lambda _: "upload", upload, source, queue=False)
    set_name.select(lambda _: "bundled", set_name, source, queue=False)
    map_btn = gr.Button("Map", variant="primary")
    emb_info = gr.Markdown()
    with gr.Row():
        map_base, map_gem = gr.Plot(label="base"), gr.Plot(label="GEM")
    gr.Markdown(CAPTIONS["maps"])
    with gr.Row():
        heat_base, heat_gem = gr.Plot(label="base similarity"), gr.Plot(label="GEM similarity")
    gr.Markdown(CAPTIONS["heat"])
    with gr.Row():
        query = gr.Textbox(label="semantic search: query", scale=4)
        k = gr.Number(5, label="top k", precision=0, minimum=1, maximum=50, scale=1)
        search_btn = gr.Button("Search", scale=1)
    gr.Examples([["interest rates and the economy"], ["a new mobile phone"], ["the football season"],
                 ["the general election campaign"], ["a film wins an award"]], [query], label="query presets")
    gr.Markdown(CAPTIONS["search"])
    widths = ["10%", "14%", "76%"]
    with gr.Row():
        hits_base = gr.Dataframe(headers=["rank", "cosine", "text"], label="base", wrap=True, column_widths=widths)
        hits_gem = gr.Dataframe(headers=["rank", "cosine", "text"], label="GEM", wrap=True, column_widths=widths)
    inputs = [source, set_name, pasted, upload, pooling]
    map_outputs = [map_base, map_gem, heat_base, heat_gem, emb_info]
    map_btn.click(embeddings, inputs, map_outputs, api_name="embeddings", **ONE_AT_A_TIME)
    search_btn.click(search, [query, *inputs[:4], k, pooling], [hits_base, hits_gem, map_base, map_gem],
                     api_name="search", **ONE_AT_A_TIME)
    return embeddings, inputs, map_outputs


def _attention_tab(session: h.Session) -> None:
    @_visible
    def attention(text, split, k, layer, head):
        r = h.attention_view(session, text, split, k, layer, head)
        return r["mask"], r["base"], r["gem"], r["info"]

    att_text = gr.Textbox("The cat sat on the mat because it was warm.", label="text")
    with gr.Row():
        split = gr.Number(6, precision=0, label="split: tokens before S (-1 = S at the end)")
        att_k = gr.Number(0, precision=0, minimum=0, label="k special tokens (0 = all of the model's)")
        layer = gr.Number(-1, precision=0, label="layer (-1 = last)")
        head = gr.Number(0, precision=0, minimum=0, label="head")
        att_btn = gr.Button("Show", variant="primary")
    gr.Examples([["The cat sat on the mat because it was warm.", 6, 0, -1, 0],
                 ["Paris is the capital of France. It is famous for the Eiffel Tower.", 8, 0, 15, 3],
                 ["Stock markets fell sharply after the central bank raised interest rates.", -1, 0, -1, 0]],
                [att_text, split, att_k, layer, head], label="presets")
    att_info = gr.Markdown()
    mask_plot = gr.Plot(label="GEM mask")
    gr.Markdown(CAPTIONS["mask"])
    with gr.Row():
        att_base, att_gem = gr.Plot(label="base attention"), gr.Plot(label="GEM attention")
    gr.Markdown(CAPTIONS["attention"])
    att_btn.click(attention, [att_text, split, att_k, layer, head], [mask_plot, att_base, att_gem, att_info],
                  api_name="attention", **ONE_AT_A_TIME)


def _generation_tab(session: h.Session) -> None:
    @_visible
    def reconstruct(text):
        r = h.reconstruct(session, text)
        return r["text"], r["info"]

    def generate(prompt, n):
        try:
            yield from h.generate_side_by_side(session, prompt, n)
        except Exception as e:
            raise gr.Error(user_message(e)) from None

    prompt = gr.Textbox(PRESET_PROMPTS[0], label=f"prompt (up to {h.MAX_TEXT_TOKENS} tokens)")
    with gr.Row():
        n_new = gr.Slider(1, h.MAX_NEW_TOKENS, value=32, step=1, label="max new tokens")
        gen_btn = gr.Button("Generate with both", variant="primary")
    gr.Examples([[p] for p in PRESET_PROMPTS], [prompt], label="presets")
    with gr.Row():
        out_base, out_gem = gr.Textbox(label="base", lines=5), gr.Textbox(label="GEM", lines=5)
    gen_timing = gr.Markdown()
    gr.Markdown(CAPTIONS["generate"])
    gen_btn.click(generate, [prompt, n_new], [out_base, out_gem, gen_timing], api_name="generate", **ONE_AT_A_TIME)
    gr.Markdown("### Reconstruction: decode a text from its special token alone")
    rec_text = gr.Textbox("Paris is the capital and largest city of France.", label="text (≤ 64 tokens)")
    rec_btn = gr.Button("Reconstruct")
    gr.Examples([["Paris is the capital and largest city of France."], ["The cat sat on the mat."]],
                [rec_text], label="presets")
    rec_out, rec_info = gr.Textbox(label="decoded from S"), gr.Markdown()
    gr.Markdown(CAPTIONS["reconstruct"])
    rec_btn.click(reconstruct, rec_text, [rec_out, rec_info], api_name="reconstruct", **ONE_AT_A_TIME)


def _embed_generate_tab(session: h.Session) -> None:
    @_visible
    def embed_and_generate(document, question, n):
        r = h.embed_and_answer(session, document, question, n)
        return r["answer"], r["preview"], r["info"]

    doc = gr.Textbox(DOCUMENT, lines=8, label="document")
    question = gr.Textbox(" Question: What did Marie Curie research? Answer:", label="question")
    with gr.Row():
        eg_n = gr.Slider(1, h.MAX_NEW_TOKENS, value=16, step=1, label="max new tokens")
        eg_btn = gr.Button("Embed and answer in one prefill", variant="primary")
    gr.Examples([[DOCUMENT, " Question: Where was Marie Curie born? Answer:"],
                 [DOCUMENT, " Question: Which elements did she discover? Answer:"]], [doc, question],
                label="presets")
    eg_answer, eg_preview, eg_info = gr.Textbox(label="answer"), gr.Textbox(label="embedding"), gr.Markdown()
    gr.Markdown(CAPTIONS["embed"])
    eg_btn.click(embed_and_generate, [doc, question, eg_n], [eg_answer, eg_preview, eg_info],
                 api_name="embed_and_generate", **ONE_AT_A_TIME)

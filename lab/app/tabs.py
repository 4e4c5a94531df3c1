"""The app's tabs, in the order a presenter tells the story. Each `*_tab(session)` builds its widgets
and returns the events to run when the page opens ((fn, inputs, outputs), drawn with the defaults),
so no tab opens empty."""

from __future__ import annotations

import gradio as gr

from ..corpora.textsets import bundled_sets
from ..evaluation.generation import PRESET_PROMPTS
from ..gem.pooling import POOLINGS
from . import handlers as h
from .builder import MASK_KINDS, mask_builder
from .costs import training_view
from .events import ONE_AT_A_TIME, user_message, visible
from .texts import CAPTIONS, COMPARE, DEFAULT_SET, DOCUMENT, QUESTION
from .why import why_gem

BASE_POOLINGS = [p for p in POOLINGS if p != "gem"]


def why_tab(session: h.Session) -> list:
    @visible
    def why(document, question, compare, n):
        r = why_gem(session, document, question, compare, n)
        return r["answer"], r["ranked"], r["info"]

    with gr.Row():
        with gr.Column(scale=3):
            doc = gr.Textbox(DOCUMENT, lines=6, max_lines=12, label="document")
            question = gr.Textbox(QUESTION, label="question")
            btn = gr.Button("Embed and answer in one prefill", variant="primary")
        with gr.Column(scale=2):  # the results sit beside the inputs: the first view shows both
            answer = gr.Textbox(label="answer", lines=2)
            ranked = gr.Dataframe(headers=["rank", "cosine", "text"], label="closest to the document's embedding",
                                  wrap=True, column_widths=["14%", "18%", "68%"])
            info = gr.Markdown()
    gr.Markdown(CAPTIONS["why"])
    with gr.Row():
        compare = gr.Textbox(COMPARE, lines=4, label="compare the document's embedding with (one per line)", scale=3)
        n = gr.Slider(1, h.MAX_NEW_TOKENS, value=12, step=1, label="max new tokens", scale=2)
    gr.Examples([[DOCUMENT, QUESTION], [DOCUMENT, " Question: In which city did Pierre Curie die? Answer:"]],
                [doc, question], label="presets")
    ins, outs = [doc, question, compare, n], [answer, ranked, info]
    btn.click(why, ins, outs, api_name="embed_and_generate", **ONE_AT_A_TIME)
    return [(why, ins, outs)]


def builder_section(session: h.Session) -> list:
    @visible
    def build(text, split, kind, break_it):
        r = mask_builder(session, text, split, kind, break_it)
        return r["mask"], r["info"]

    gr.Markdown("### Build the mask, then try to break it")
    with gr.Row():
        text = gr.Textbox("The Eiffel Tower is in Paris. It was built in 1889.", label="row text", scale=3)
        split = gr.Number(8, precision=0, minimum=1, label="tokens before S", scale=1)
        kind = gr.Radio(list(MASK_KINDS), value="gem", label="mask", scale=1)
        break_it = gr.Checkbox(False, label="break it: the suffix may see the prefix", scale=1)
    verdict = gr.Markdown()
    figure = gr.Plot(label="your mask")
    gr.Markdown(CAPTIONS["builder"])
    ins, outs = [text, split, kind, break_it], [figure, verdict]
    for widget in (kind, break_it):  # live: every switch reruns the check
        widget.change(build, ins, outs, **ONE_AT_A_TIME)
    gr.Button("Check", variant="primary").click(build, ins, outs, api_name="mask_builder", **ONE_AT_A_TIME)
    return [(build, ins, outs)]


def costs_tab(session: h.Session) -> list:
    @visible
    def costs():
        r = training_view(session)
        return r["buys"], r["bars"], r["costs"]

    gr.Markdown(CAPTIONS["buys"])
    buys = gr.Markdown()
    bars = gr.Plot(label="embedding tasks")
    gr.Markdown(CAPTIONS["costs"])
    cost = gr.Markdown()
    gr.Button("Reload the measured results").click(costs, None, [buys, bars, cost], api_name="costs", **ONE_AT_A_TIME)
    return [(costs, None, [buys, bars, cost])]


def embeddings_tab(session: h.Session) -> list:
    @visible
    def embeddings(source, set_name, pasted, upload, pooling, progress=gr.Progress()):
        r = h.embeddings_view(session, source, set_name, pasted, upload, pooling,
                              progress=lambda f, d: progress(f, desc=d))
        return r["map_base"], r["map_gem"], r["heat_base"], r["heat_gem"], r["info"]

    @visible
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
    return [(embeddings, inputs, map_outputs)]


def attention_tab(session: h.Session) -> list:
    @visible
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
    ins, outs = [att_text, split, att_k, layer, head], [mask_plot, att_base, att_gem, att_info]
    att_btn.click(attention, ins, outs, api_name="attention", **ONE_AT_A_TIME)
    return [(attention, ins, outs)]


def generation_tab(session: h.Session) -> list:
    @visible
    def reconstruct(text, beams):
        r = h.reconstruct(session, text, beams)
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
    gr.Markdown("### Reconstruction: decode a text from its special tokens alone")
    rec_text = gr.Textbox("Paris is the capital and largest city of France.", label="text (≤ 64 tokens)")
    with gr.Row():
        rec_beams = gr.Slider(1, h.MAX_BEAMS, value=h.default_beams(session), step=1,
                              label="beams (1: greedy; it starts at the GEM model's own setting)")
        rec_btn = gr.Button("Reconstruct")
    gr.Examples([["Paris is the capital and largest city of France."], ["The cat sat on the mat."]],
                [rec_text], label="presets")
    rec_out, rec_info = gr.Textbox(label="decoded from S"), gr.Markdown()
    gr.Markdown(CAPTIONS["reconstruct"])
    rec_btn.click(reconstruct, [rec_text, rec_beams], [rec_out, rec_info], api_name="reconstruct", **ONE_AT_A_TIME)
    return []



"""What the app says: the page's intro (from the GEM model shown), the default inputs, and one caption
per view, each written to be read aloud by a presenter: what is on screen and what to look for."""

from __future__ import annotations

from ..corpora.textsets import bundled_sets
from . import handlers as h


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
and the cache its answer continues from** (the first tab).{sink} Left: the base LM; right: the same LM
after GEM training. The numbered tabs follow the course: the mask, embeddings, generation, what it costs.
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
QUESTION = " Question: What did Marie Curie research? Answer:"
COMPARE = "\n".join(["a scientist who discovered radioactive elements", "the history of Poland",
                     "a football club wins the league", "interest rates rise again"])
CAPTIONS = {
    "why": "One pass over the document gives two things. Its embedding: the texts on the right are ranked by "
           "how close they are to it. And the cache the answer continues from: the question is read after the "
           "document, without reading the document again. The timing sets this one pass against embedding and "
           "then generating separately. The answers of a small model are short and can repeat; the point is "
           "that one pass serves both.",
    "builder": "Pick a mask, then try to break it. The leak check runs the model on this row under your mask, "
               "and again from the special tokens' cache alone. If the suffix's predictions are the same both "
               "ways, nothing of the text reached the suffix except through S.",
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
    "reconstruct": "Decoded from the special tokens' cache alone: the decoder never sees the text, only S. "
                   "Short texts often come back word for word, longer ones as their gist. The line below says "
                   "whether the decoder stopped where the text ends or ran on until the length cap. More beams "
                   "keep several readings of S alive and return the likeliest whole text; the shipped model "
                   "reads S with 8 by default, as its card measures it.",
    "buys": "What training buys: the same five tasks, scored for the base model with each way of pooling it, "
            "for GEM, and for the small encoder GEM's readout was pulled towards.",
    "costs": "What it costs: the language model, on the same exam questions and texts before and after, "
             "and the training and run-time price.",
}

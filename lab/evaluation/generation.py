"""Generation side by side: the app's preset prompts, greedy, for each model — the examples of a
model card (an example, not a measurement: MMLU and perplexity are the measured side).

    python -m lab.evaluation.generation [--models smollm2-135m gem-smollm2-135m] [--out results/generation]

Every model is loaded in fp32 (as the README's tables), reads each prompt as `GemModel.generate`
does (a GEM model after its sink token) and continues it greedily for `max_new_tokens`; the table
quotes each continuation with `repr`, so spaces and line breaks show.
"""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)

# the prompts of the app's Generate tab (lab.app.ui) and of the model card
PRESET_PROMPTS = ("The capital of France is", "Photosynthesis is the process by which",
                  "Once upon a time, in a small village,")


def continuations(model, prompts=PRESET_PROMPTS, max_new_tokens: int = 24) -> list[str]:
    """Greedy continuation of each prompt by `model` (a GemModel), one prompt at a time (no padding)."""
    return [model.generate(prompt, max_new_tokens=max_new_tokens) for prompt in prompts]


def generation_table(outputs: dict[str, list[str]], prompts=PRESET_PROMPTS) -> str:
    """Markdown: one row per prompt, one column per model. outputs: {model label: continuations}."""
    def cell(text: str) -> str:
        return repr(text).replace("|", "\\|")

    lines = ["| prompt | " + " | ".join(label.replace("|", "\\|") for label in outputs) + " |",
             "|---|" + "---|" * len(outputs)]
    for i, prompt in enumerate(prompts):
        lines.append(f"| {prompt} | " + " | ".join(cell(texts[i]) for texts in outputs.values()) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from ..weights.loading import load
    from .report import save_json_and_markdown

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=["smollm2-135m", "gem-smollm2-135m"])
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--out", default="results/generation", help="writes OUT.json and OUT.md")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    outputs = {name: continuations(load(name, dtype="float32"), max_new_tokens=args.max_new_tokens)
               for name in args.models}
    md = (f"## Generation, greedy, {args.max_new_tokens} new tokens (`python -m lab.evaluation.generation`)\n\n"
          + generation_table(outputs))
    save_json_and_markdown(args.out, {"max_new_tokens": args.max_new_tokens, "prompts": list(PRESET_PROMPTS),
                                      "dtype": "float32", "outputs": outputs}, md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

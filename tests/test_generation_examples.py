"""The model card's generation examples: the app's preset prompts, one greedy continuation per model."""

from lab.evaluation.generation import PRESET_PROMPTS, continuations, generation_table
from lab.weights.loading import load


def test_continuations_are_the_models_own_greedy_generate_and_tabulated():
    gem = load("tiny-llama", dtype="float32")
    texts = continuations(gem, max_new_tokens=5)
    assert texts == [gem.generate(p, max_new_tokens=5) for p in PRESET_PROMPTS]
    table = generation_table({"a|b": ["x|y", "line\nbreak", "z"], "other": ["1", "2", "3"]})
    lines = table.splitlines()
    assert lines[0] == "| prompt | a\\|b | other |" and len(lines) == 2 + len(PRESET_PROMPTS)
    assert lines[2] == f"| {PRESET_PROMPTS[0]} | 'x\\|y' | '1' |", "a | inside a continuation is escaped"
    assert "'line\\nbreak'" in lines[3], "line breaks show as \\n"

"""How an exercise check answers the learner: ✓ with what it means, ✗ with where to look, or a prompt."""

from __future__ import annotations


def verdict(ok: bool, good: str, hint: str) -> bool:
    print(f"✓ {good}" if ok else f"✗ not yet: {hint}")
    return ok


def answered(*answers) -> bool:
    """False (with a prompt) while an exercise's answer is still the notebook's placeholder None."""
    if any(a is None for a in answers):
        print("… your turn: replace the None in the cell above with your answer, then run it again")
        return False
    return True

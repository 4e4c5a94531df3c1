"""Benchmarks: python -m bench runs them all (results are printed as JSON lines)."""

"""The studies that chose GEM Lab's recipe (ablations, reconstruction budget and trade-off, the sink
probe). They import `lab`; `lab` never imports them (tests/test_architecture.py). What each asked,
found, and how to rerun it: research/README.md."""

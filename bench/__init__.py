"""Benchmarks that print figures: run from the repository root as `python -m bench.NAME` (see the README)."""

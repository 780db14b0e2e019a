"""Benchmarks, measured side by side in one run; `python -m bench` (or `make bench`) runs them
and writes BENCHMARKS.md. Never part of the test suite's assertions: timings are noisy here."""

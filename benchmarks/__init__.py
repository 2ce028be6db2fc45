"""Benchmarks of FA-Seg: each `bench_*.py` module has `main(argv=None)`, prints Markdown tables
and writes `benchmarks/out/<name>.json`; `python -m benchmarks.run_all` runs them all."""

"""Benchmark of pygeoapi-prefect's PrefectManager against pygeoapi's TinyDB manager.

Run with `make bench` (or `.venv/bin/python -m benchmarks` from the repository root).
Results go to `benchmarks/results/latest.md` and `latest.json`.
"""

"""Benchmarks behind `python -m launch.bench <name>`: each returns a report with the keys its issue names."""

"""Benchmarks: scripts that measure speed and quality and write tables (``python benchmarks/<name>.py``),
and the experiments they share with the tests."""

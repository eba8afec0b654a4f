"""Stages of ``benchmarks/classic_families.py``: each module exposes
``run(preset, out, device) -> {"claims", "metrics", "table_rows"}``."""

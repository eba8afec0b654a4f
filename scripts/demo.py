"""The main job: every package's ``python -m <package> demo`` in turn, then ``runs/demo/report.md``.

Each package writes its own section (``report.md``), numbers and PNG figures under
``runs/demo/<package>/`` as the demo contract of :mod:`core.runs` says; this script runs them
one after another on CPU, checks each output against the contract and assembles the report.
It may import every package; ``core`` never imports a domain.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

PACKAGES = ("core", "control", "molecules", "continual", "vision")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's packages first

from core.files import atomic_write  # noqa: E402
from core.runs import check_demo_output  # noqa: E402


def has_demo(package: str) -> bool:
    """True when ``python -m <package> demo`` exists (the package has a CLI)."""
    return (ROOT / package / "__main__.py").exists()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="*", choices=PACKAGES, help="run these packages only")
    args = parser.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    sections, timings = [], []
    for package in args.only or PACKAGES:
        if not has_demo(package):
            print(f"[demo] {package}: no demo yet, skipped", flush=True)
            continue
        out = args.out / package
        cmd = [sys.executable, "-m", package, "demo", "--out", str(out), "--device", args.device]
        cmd += ["--seed", str(args.seed)]
        print(f"[demo] {' '.join(cmd[1:])}", flush=True)
        start = time.perf_counter()
        result = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        elapsed = time.perf_counter() - start
        rc = result.returncode
        if rc == 0:
            try:
                check_demo_output(out, package)
            except (OSError, ValueError) as e:
                print(f"[demo] {package} broke the demo contract: {e}", file=sys.stderr)
                rc = 1
        timings.append((package, elapsed, rc))
        if rc != 0:
            print(f"[demo] {package} failed with exit code {rc}", file=sys.stderr)
            continue
        sections.append(_relink((out / "report.md").read_text(), package))

    lines = ["# anneal — main job report", "", "| package | wall time (s) | status |", "|---|---|---|"]
    lines += [f"| {p} | {t:.1f} | {'ok' if rc == 0 else f'failed ({rc})'} |" for p, t, rc in timings]
    report = "\n".join(lines) + "\n\n" + "\n\n".join(sections)
    with atomic_write(args.out / "report.md") as tmp:
        tmp.write_text(report)
    print(f"[demo] report: {args.out / 'report.md'}", flush=True)
    return 0 if all(rc == 0 for _, _, rc in timings) else 1


def _relink(text: str, package: str) -> str:
    """Make a section's relative figure links point into its package folder."""
    return text.replace("](./", f"]({package}/")


if __name__ == "__main__":
    sys.exit(main())

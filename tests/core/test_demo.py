"""The core demo at its smoke size, and the main job's plumbing: preset validation and report assembly."""

import importlib.util
from pathlib import Path

import pytest

from core.cli import main
from core.config import preset
from core.demo import PRESETS
from core.runs import check_demo_output

ROOT = Path(__file__).resolve().parents[2]


def load_driver():
    spec = importlib.util.spec_from_file_location("demo_driver", ROOT / "scripts" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_unknown_preset_is_refused_with_the_valid_names(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--preset", "huge"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "huge" in err and "quick" in err and "smoke" in err
    with pytest.raises(ValueError, match="valid presets: quick, smoke"):
        preset(PRESETS, "huge")


def test_driver_finds_package_demos_and_relinks_figures():
    driver = load_driver()
    assert driver.has_demo("core") and driver.has_demo("control") and driver.has_demo("vision")
    assert not driver.has_demo("molecules")  # no CLI yet: skipped by the main job
    assert driver._relink("![x](./plans.png)", "control") == "![x](control/plans.png)"


def test_core_demo_smoke(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--preset", "smoke", "--out", str(out), "--device", "cpu", "--no-progress"]) == 0
    report = (out / "report.md").read_text()
    assert report.startswith("## core") and "six samplers" in report and "](./samplers.png)" in report
    metrics = check_demo_output(out, "core")  # the contract scripts/demo.py relies on
    assert len(metrics["solvers"]) == 6 and (out / "samplers.png").is_file()
    # the ancestral samplers land near held-out data even after the smoke preset's 200 steps
    sw = {r["method"]: r["sliced_wasserstein"] for r in metrics["solvers"]}
    assert sw["ddpm"] < 0.5 and sw["euler_maruyama"] < 0.5

"""The main job's plumbing: preset validation and report assembly (the demo itself runs in
tests/core/test_image_pipeline.py::test_demo_smoke)."""

import importlib.util
from pathlib import Path

import pytest

from core.cli import main
from core.config import preset
from core.demo import PRESETS

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
    assert driver.has_demo("core") and driver.has_demo("control")
    assert driver.has_demo("molecules")
    assert not driver.has_demo("continual")  # no CLI yet: skipped by the main job
    assert driver._relink("![x](./plans.png)", "control") == "![x](control/plans.png)"

"""The core demo at its smoke size, and the main job's plumbing: preset validation and report assembly."""

import importlib.util
import math
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
    assert all(driver.has_demo(package) for package in driver.PACKAGES)
    assert not driver.has_demo("tests")  # a folder without a CLI is skipped by the main job
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

    # the classic-families stage: the Dirac-GAN portrait and the 2-D families' samples
    assert "### Classic families" in report
    assert "](./dirac_gan.png)" in report and "](./families.png)" in report
    assert (out / "dirac_gan.png").is_file() and (out / "families.png").is_file()
    assert [r["family"] for r in metrics["families"]] == ["GAN", "WGAN-GP", "CLC-GAN", "VAE", "RNADE"]
    assert all(math.isfinite(r["sliced_wasserstein"]) for r in metrics["families"])
    # the eigenvalues of J = [[0, -f'(0)], [f'(0), -clc]] in closed form (f'(0) = 1/2 for GAN,
    # 1 for WGAN; clc = 1)
    dirac = metrics["dirac_gan"]
    expected = {
        "gan": [0.5j, -0.5j], "wgan": [1j, -1j], "clc_gan": [-0.5, -0.5],
        "clc_wgan": [complex(-0.5, math.sqrt(3) / 2), complex(-0.5, -math.sqrt(3) / 2)],
    }  # fmt: skip
    for key, values in expected.items():
        got = sorted((complex(*v) for v in dirac["eigenvalues"][key]), key=lambda z: z.imag)
        want = sorted(values, key=lambda z: complex(z).imag)
        assert all(abs(g - w) < 1e-9 for g, w in zip(got, want, strict=True)), (key, got)
    dist = dirac["final_distance"]  # GAN and WGAN circle (or spiral out); CLC converges
    assert dist["gan"] > 1.0 and dist["wgan"] > 1.0 and dist["clc_gan"] < 1e-3 and dist["clc_wgan"] < 1e-3

"""The image benchmark's claim checks and figure, on synthetic results (no training)."""

import importlib.util
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "image_generation.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("image_generation_benchmark", _PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(fid, nfe):
    keys = ("precision", "recall", "class_accuracy", "seconds")
    return {"fid_fmnist": fid, "nfe": nfe, **dict.fromkeys(keys, 0.5)}


def _results(f20, f10, d10, anc, cd1, cd2):
    ddpm = {"dpm_solver++(2M) 20": _row(f20, 20), "dpm_solver++(2M) 10": _row(f10, 10)}
    ddpm["ddim 10"] = _row(d10, 10)
    for k in (10, 20):
        ddpm[f"dpm_solver++(2M) {k}, time-uniform grid"] = _row(9.0, k)  # fails on this grid
        ddpm[f"ddim {k}, time-uniform grid"] = _row(d10, k)
    ddpm["real training images (floor)"] = _row(0.1, 0)
    return {
        "ddpm": {"rows": ddpm},
        "ancestral": {"rows": {"ddpm ancestral (full chain)": _row(anc, 999)}},
        "consistency": {"rows": {"consistency 1-step": _row(cd1, 1), "consistency 2-step": _row(cd2, 2)}},
    }


@pytest.mark.parametrize(
    ("numbers", "one", "four"),
    [
        ((1.05, 0.8, 1.0, 1.0, 2.0, 1.5), True, True),
        ((1.11, 0.8, 1.0, 1.0, 2.0, 1.5), False, True),  # 20 NFE more than 10% above ancestral
        ((1.05, 0.91, 1.0, 1.0, 2.0, 1.5), False, True),  # 10 NFE not clearly below DDIM
        ((1.05, 0.8, 1.0, 1.0, 2.2, 1.5), True, False),  # 1 step above 2x the teacher's 20 NFE
        ((1.05, 0.8, 1.0, 1.0, 2.0, 2.0), True, False),  # 2 steps not better than 1
    ],
)
def test_claims_1_and_4(bench, numbers, one, four):
    claims = bench.claims(_results(*numbers))
    assert claims["1"]["holds"] is one and claims["1"]["time_uniform"]["holds"] is False
    assert claims["4"]["holds"] is four and claims["4"]["teacher 20 NFE"] == numbers[0]


def test_fid_vs_nfe_figure(bench, tmp_path):
    path = bench.plot_fid_vs_nfe(_results(1.0, 0.8, 1.0, 1.0, 2.0, 1.5), tmp_path / "fid.png")
    assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert bench.plot_fid_vs_nfe({}, tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()

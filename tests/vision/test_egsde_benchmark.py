"""The EGSDE benchmark and command line: outputs, resumption, presets and usage errors."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from vision.cli import main
from vision.egsde.benchmark import BENCH_METHODS, bench_config, run_benchmark, select_settings

TINY = dict(
    tasks=("digits",), seeds=(0, 1, 2), n_test=6, n_val=6, m_grid=(0.4, 0.6), m_grid_test=4, workers=1,
    figure_pairs=4, tune_grid=((0.4, 10.0, 1.0), (0.5, 30.0, 2.0)), tune_images=4,
    models=dict(score_steps=2, score_batch=8, classifier_steps=2, classifier_batch=8, evaluator_epochs=1,
                evaluator_train_size=200),
    translate=dict(steps=2),
)  # fmt: skip


def test_benchmark_writes_every_metric_and_resumes(tmp_path):
    config = bench_config("quick", **TINY)
    metrics = run_benchmark(config, tmp_path, device="cpu", progress=False)
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    res = on_disk["tasks"]["digits"]
    assert set(res["methods"]) == {tag for tag, *_ in BENCH_METHODS}
    assert {"egsde", "sdedit", "ilvr", "ilvr_from_m"} <= set(res["methods"])
    for vals in res["methods"].values():
        assert set(vals) == {"fid", "ssim", "psnr", "l2", "identity_accuracy"}
        for stat in vals.values():
            assert len(stat["values"]) == 3 and stat["std"] == pytest.approx(np.std(stat["values"], ddof=1))
    assert [r["m"] for r in res["m_sensitivity"]["egsde"]] == [0.4, 0.6]
    assert set(res["claims"]["egsde_vs"]) == {"sdedit", "ilvr"}
    chosen = res["tuning"]["chosen"]
    assert res["tuning"]["split"] == "validation" and len(res["tuning"]["grid"]) == 2
    assert (res["settings"]["lambda_s"], res["settings"]["lambda_i"]) == (
        chosen["lambda_s"],
        chosen["lambda_i"],
    )
    for name in ("translations.png", "m_sensitivity.png", "config.json"):
        assert (tmp_path / name).stat().st_size > 0
    model = tmp_path / "digits" / "score_model" / "model" / "model.safetensors"
    stamp = model.stat().st_mtime_ns
    again = run_benchmark(config, tmp_path, device="cpu", progress=False)
    assert model.stat().st_mtime_ns == stamp
    assert again["tasks"]["digits"]["methods"] == metrics["tasks"]["digits"]["methods"]


def test_selection_rule_compares_with_the_baselines_at_the_same_m():
    base = {0.3: {"sdedit": {"fid": 5.0, "ssim": 0.3}, "ilvr": {"fid": 6.0, "ssim": 0.5}},
            0.5: {"sdedit": {"fid": 4.0, "ssim": 0.2}, "ilvr": {"fid": 6.0, "ssim": 0.3}}}  # fmt: skip
    # better than both baselines at its own M on FID and SSIM: 3 (at M = 0.5), 4 and 5; the best
    # mean rank of FID and SSIM among them is 4; 1 has the lowest FID but loses on SSIM
    cells = [(0.3, 1, 1.0, 0.4), (0.3, 2, 7.0, 0.9), (0.5, 3, 3.9, 0.35), (0.3, 4, 2.5, 0.7),
             (0.3, 5, 4.9, 0.55)]  # fmt: skip
    rows = [{"m": m, "lambda_s": ls, "fid": f, "ssim": q} for m, ls, f, q in cells]
    assert select_settings(rows, base)["lambda_s"] == 4
    # none better on both: among those with a higher SSIM, the lowest FID
    rows = [{"m": 0.3, "lambda_s": 1, "fid": 1.0, "ssim": 0.45},
            {"m": 0.3, "lambda_s": 2, "fid": 8.0, "ssim": 0.6},
            {"m": 0.5, "lambda_s": 3, "fid": 7.0, "ssim": 0.31}]  # fmt: skip
    assert select_settings(rows, base)["lambda_s"] == 3
    rows = [
        {"m": 0.3, "lambda_s": 1, "fid": 1.0, "ssim": 0.45},
        {"m": 0.3, "lambda_s": 2, "fid": 2.0, "ssim": 0.1},
    ]
    assert select_settings(rows, base)["lambda_s"] == 1  # no row has a higher SSIM: best mean rank


def test_claims_compare_seed_means():
    from vision.egsde.benchmark import egsde_claims

    def row(fid, ssim):
        return {"fid": {"mean": fid}, "ssim": {"mean": ssim}}

    methods = {"egsde": row(2.0, 0.6), "sdedit": row(3.0, 0.5), "ilvr": row(9.0, 0.55),
               "realism_only": row(1.0, 0.4), "faithfulness_only": row(5.0, 0.7)}  # fmt: skip
    claims = egsde_claims(methods)
    assert claims["egsde_beats_baselines"] and claims["each_expert_alone_loses"]
    methods["ilvr"] = row(9.0, 0.65)
    claims = egsde_claims(methods)
    assert not claims["egsde_beats_baselines"] and claims["egsde_vs"]["ilvr"] == {"fid": True, "ssim": False}


def test_ilvr_starts_from_pure_noise_with_the_step_size_of_a_run_from_m():
    from vision.egsde.benchmark import spread, started_at
    from vision.egsde.translate import TranslateSettings

    assert spread(10, 3).tolist() == [0, 4, 9] and spread(3, 5).tolist() == [0, 1, 2]
    s = TranslateSettings(m=0.3, steps=20)
    assert started_at(s, None) is s
    full = started_at(s, 1.0)
    assert (full.m, full.steps, full.lambda_s) == (1.0, 67, s.lambda_s)
    assert dict(zip([r[0] for r in BENCH_METHODS], [r[3] for r in BENCH_METHODS], strict=True))["ilvr"] == 1.0


def test_presets_resolve_to_the_papers_settings():
    paper = bench_config("paper")
    assert paper.image_size == 256 and paper.tasks == ("folder",)
    t = paper.translate
    assert (t.lambda_s, t.lambda_i, t.m, t.steps, t.factor, t.layer) == (500.0, 2.0, 0.5, 500, 32, "mid")
    assert paper.models.timesteps == 1000
    from vision.egsde.models import build_domain_classifier, build_score_net

    unet = build_score_net(paper.models, 256, 3)
    clf = build_domain_classifier(paper.models, 256, 3)
    assert sum(p.numel() for p in unet.parameters()) > 50e6
    assert clf.layers[-2:] == ("mid", "pool") and len(clf.levels) == 6
    quick = bench_config("quick")
    assert quick.tasks == ("digits", "fashion") and len(quick.seeds) >= 3
    with pytest.raises(ValueError, match="unknown preset 'fast'"):
        bench_config("fast")
    with pytest.raises(ValueError, match="M must lie in \\(0, 1\\]"):
        bench_config("quick", m_grid=(0.5, 1.2))


def _folder(path, n, size, seed):
    path.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path / f"{i}.png")
    return path


@pytest.mark.slow
def test_paper_preset_builds_and_takes_steps_at_256px(tmp_path):
    src, tgt = _folder(tmp_path / "cat", 5, 256, 0), _folder(tmp_path / "dog", 4, 256, 1)
    config = bench_config(
        "paper", source_dir=str(src), target_dir=str(tgt), seeds=(0,), m_grid=(0.5,), m_grid_test=2, n_test=2,
        figure_pairs=2,
        models=dict(score_steps=1, score_batch=1, classifier_steps=2, classifier_batch=1, evaluator_epochs=1),
        translate=dict(steps=2, batch_size=1),
    )  # fmt: skip
    metrics = run_benchmark(config, tmp_path / "run", device="cpu", progress=False)
    assert set(metrics["tasks"]["folder"]["methods"]["egsde"]) == {"fid", "ssim", "psnr", "l2"}
    unet = json.loads((tmp_path / "run" / "folder" / "score_model" / "model" / "config.json").read_text())
    assert unet["image_size"] == 256 and unet["base_channels"] == 128


def test_translate_command_on_an_image_folder(tmp_path, capsys):
    from core.nets import TimeClassifier
    from vision.egsde.models import ScoreUNet

    torch.manual_seed(0)
    unet = ScoreUNet(image_size=16, in_channels=1, base_channels=8, channel_mults=[1, 2], num_res_blocks=1,
                     attention_resolutions=[], dropout=0.0, groups=4, time_scale=1.0)  # fmt: skip
    unet.save_pretrained(tmp_path / "unet")
    TimeClassifier(image_size=16, in_channels=1, base_channels=8, channel_mults=[1, 2],
                   groups=4).save_pretrained(tmp_path / "clf")  # fmt: skip
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        Image.fromarray(np.full((16, 16), 40 * i, np.uint8)).save(src / f"img{i}.png")
    models = ["--score-model", str(tmp_path / "unet"), "--classifier", str(tmp_path / "clf")]
    args = [
        "translate",
        "--source",
        str(src),
        "--out",
        str(tmp_path / "out"),
        *models,
        "--steps",
        "2",
        "--m",
        "0.3",
    ]
    assert main(args) == 0
    assert sorted(p.name for p in (tmp_path / "out").glob("img*.png")) == ["img0.png", "img1.png", "img2.png"]
    with Image.open(tmp_path / "out" / "img1.png") as im:
        assert im.size == (16, 16)
    with pytest.raises(SystemExit):
        main([*args[:-2], "--m", "1.5"])
    assert "M must be a fraction of the diffusion in (0, 1], got 1.5" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["translate", "--source", str(empty), *args[3:]]) == 2
    assert "PNG/JPEG images" in capsys.readouterr().err
    assert main([*args, "--layer", "block9"]) == 2
    assert "unknown feature layer 'block9'" in capsys.readouterr().err
    assert main(["benchmark", "egsde", "--workers", "0"]) == 2
    assert "--workers must be >= 1, got 0" in capsys.readouterr().err

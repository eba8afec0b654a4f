"""EGSDE: experts, the guided mean, the translation methods, metrics, data and bad input."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from core import sample
from core.data import DatasetNotFoundError, load_sklearn_digits
from core.nets import TimeClassifier
from vision.egsde.data import load_source_folder
from vision.egsde.experts import FaithfulnessExpert, ILVRProjection, RealismExpert, lowpass, perturb
from vision.egsde.metrics import l2_distance, psnr, ssim, translation_metrics
from vision.egsde.models import ScoreUNet, score_denoiser
from vision.egsde.translate import TranslateSettings, translate

SIZE = 8


def _den(seed=0):
    torch.manual_seed(seed)
    net = ScoreUNet(image_size=SIZE, in_channels=1, base_channels=8, channel_mults=[1, 2], num_res_blocks=1,
                    attention_resolutions=[], dropout=0.0, groups=4, time_scale=1.0)  # fmt: skip
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return score_denoiser(net.eval(), 1000)


def _clf():
    return TimeClassifier(image_size=SIZE, in_channels=1, num_classes=2, base_channels=8,
                          channel_mults=[1, 2], groups=4)  # fmt: skip


def _images(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, SIZE, SIZE, generator=g) * 2 - 1


def test_lowpass_keeps_block_means_and_removes_the_checkerboard():
    const = torch.full((1, 1, SIZE, SIZE), 0.3)
    torch.testing.assert_close(lowpass(const, 4), const)
    checker = (torch.arange(SIZE)[:, None] + torch.arange(SIZE)[None, :]) % 2 * 2.0 - 1.0
    torch.testing.assert_close(lowpass(checker.reshape(1, 1, SIZE, SIZE), 2), torch.zeros(1, 1, SIZE, SIZE))
    x = _images()
    torch.testing.assert_close(lowpass(lowpass(x, 4), 4), lowpass(x, 4))
    block = x[0, 0, 4:8, 0:4].mean()
    torch.testing.assert_close(lowpass(x, 4)[0, 0, 4:8, 0:4], block.expand(4, 4))
    with pytest.raises(ValueError, match="low-pass factor.*dividing the image size 8, got 3"):
        lowpass(x, 3)


def test_experts_match_their_definitions():
    den, clf, x, y = _den(), _clf(), _images(seed=1), _images(seed=2)
    t = torch.full((4,), 0.3, dtype=torch.float64)
    faith = FaithfulnessExpert(x, den.schedule, 2, generator=torch.Generator().manual_seed(5))
    xt = perturb(den.schedule, x, t, torch.Generator().manual_seed(5))
    expected = ((lowpass(y, 2) - lowpass(xt, 2)) ** 2).flatten(1).sum(1)
    torch.testing.assert_close(faith.energy(y, t), expected)
    real = RealismExpert(clf, "down.1", x, den.schedule, generator=torch.Generator().manual_seed(5))
    fx = clf.features(xt, t, "down.1")
    fy = clf.features(y, t, "down.1")
    cos = (fx * fy).sum(1) / (fx.norm(dim=1) * fy.norm(dim=1))
    torch.testing.assert_close(real.energy(y, t), cos.flatten(1).mean(1))
    with pytest.raises(ValueError, match="unknown feature layer 'middle'"):
        RealismExpert(clf, "middle", x, den.schedule)
    with pytest.raises(ValueError, match="spatial feature layer"):
        RealismExpert(clf, "pool", x, den.schedule)


def test_guided_ddpm_step_is_egsdes_guided_mean():
    """A guided ancestral step k -> k-1 moves the mean by -lambda * beta_k / sqrt(1 - beta_k) * grad E."""
    den, x = _den(), _images(seed=3)
    n, k = 1000, 400
    betas = np.linspace(1e-4, 0.02, n)
    grid = torch.tensor([(k + 1) / n, k / n], dtype=torch.float64)
    y = _images(seed=4)
    lam = 3.0
    energy = FaithfulnessExpert(x, den.schedule, 2, lam, generator=torch.Generator().manual_seed(9))
    guided = sample(
        den, y, method="ddpm", grid=grid, guide=energy, generator=torch.Generator().manual_seed(1)
    )
    plain = sample(den, y, method="ddpm", grid=grid, generator=torch.Generator().manual_seed(1))
    probe = FaithfulnessExpert(x, den.schedule, 2, generator=torch.Generator().manual_seed(9))
    yg = y.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(probe.energy(yg, grid[:1].expand(4)).sum(), yg)
    beta = betas[k]
    torch.testing.assert_close(guided - plain, -lam * beta / np.sqrt(1 - beta) * grad, rtol=1e-4, atol=1e-5)


def test_ilvr_replaces_the_low_frequencies():
    den, x, y = _den(), _images(seed=5), _images(seed=6)
    t = torch.full((4,), 0.2, dtype=torch.float64)
    proj = ILVRProjection(x, den.schedule, 2, generator=torch.Generator().manual_seed(3))
    out = proj.project(y, t)
    xt = perturb(den.schedule, x, t, torch.Generator().manual_seed(3))
    pool = torch.nn.functional.avg_pool2d
    torch.testing.assert_close(pool(out, 2), pool(xt, 2), atol=1e-6, rtol=0)
    torch.testing.assert_close(out - lowpass(out, 2), y - lowpass(y, 2), atol=1e-5, rtol=0)


@pytest.mark.parametrize("method", ["egsde", "sdedit", "ilvr", "realism_only", "faithfulness_only"])
def test_translate_runs_every_method_reproducibly(method):
    den, clf, x = _den(), _clf(), _images(6, seed=7)
    s = TranslateSettings(method=method, lambda_s=10.0, lambda_i=1.0, m=0.3, steps=3, factor=2, layer="mid",
                          batch_size=4)  # fmt: skip
    a = translate(den, x, s, classifier=clf, generator=torch.Generator().manual_seed(0))
    b = translate(den, x, s, classifier=clf, generator=torch.Generator().manual_seed(0))
    assert a.shape == x.shape and a.abs().max() <= 1.0
    torch.testing.assert_close(a, b)


def test_small_m_keeps_the_source_and_guidance_pulls_towards_it():
    den, x = _den(), _images(8, seed=8)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    tiny = translate(den, x, TranslateSettings(method="sdedit", m=0.003, steps=2), generator=g())
    assert (tiny - x).abs().max() < 0.1
    plain = translate(den, x, TranslateSettings(method="sdedit", m=0.6, steps=10), generator=g())
    faithful = translate(den, x, TranslateSettings(method="faithfulness_only", m=0.6, steps=10, factor=2,
                                                   lambda_i=1.0), generator=g())  # fmt: skip
    assert float(l2_distance(lowpass(faithful, 2), lowpass(x, 2)).mean()) < float(
        l2_distance(lowpass(plain, 2), lowpass(x, 2)).mean()
    )


def test_bad_input_is_named():
    den, clf, x = _den(), _clf(), _images()
    s = TranslateSettings(steps=2, factor=2)
    with pytest.raises(ValueError, match="must be 8x8, got 16x16"):
        translate(den, torch.zeros(2, 1, 16, 16), s, classifier=clf)
    with pytest.raises(ValueError, match="1 channel\\(s\\), got 3"):
        translate(den, torch.zeros(2, 3, SIZE, SIZE), s, classifier=clf)
    with pytest.raises(ValueError, match="must lie in \\[-1, 1\\], got values in \\[0, 255\\]"):
        translate(
            den,
            torch.full((2, 1, SIZE, SIZE), 255.0).index_fill_(0, torch.tensor([0]), 0.0),
            s,
            classifier=clf,
        )
    for m in (0.0, 1.5, float("nan"), -0.2):
        with pytest.raises(ValueError, match="M must be a fraction of the diffusion in \\(0, 1\\]"):
            TranslateSettings(m=m)
    with pytest.raises(ValueError, match="unknown feature layer 'block9'"):
        translate(den, x, TranslateSettings(steps=2, factor=2, layer="block9"), classifier=clf)
    with pytest.raises(ValueError, match="needs the domain classifier"):
        translate(den, x, s)
    with pytest.raises(ValueError, match="unknown method 'cyclegan'"):
        TranslateSettings(method="cyclegan")


def test_source_folder_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetNotFoundError, match="PNG/JPEG images"):
        load_source_folder(empty, SIZE, 1)
    with pytest.raises(DatasetNotFoundError):
        load_source_folder(tmp_path / "missing", SIZE, 1)
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(np.zeros((SIZE, SIZE), np.uint8)).save(folder / "a.png")
    Image.fromarray(np.full((12, 12, 3), 255, np.uint8)).save(folder / "b.png")
    with pytest.raises(ValueError, match="b.png is 12x12, the model expects 8x8"):
        load_source_folder(folder, SIZE, 1)
    imgs, names = load_source_folder(folder, SIZE, 1, resize=True)
    assert imgs.shape == (2, 1, SIZE, SIZE) and names == ["a.png", "b.png"]
    assert imgs[0].max() == -1.0 and imgs[1].min() == 1.0


def test_metrics_against_scikit_image():
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    a = torch.rand(3, 3, 16, 16) * 2 - 1
    b = (a + 0.3 * torch.randn_like(a)).clamp(-1, 1)
    au, bu = ((a + 1) / 2).double().numpy(), ((b + 1) / 2).double().numpy()
    ref_ssim = [structural_similarity(au[i], bu[i], data_range=1.0, channel_axis=0) for i in range(3)]
    ref_psnr = [peak_signal_noise_ratio(au[i], bu[i], data_range=1.0) for i in range(3)]
    np.testing.assert_allclose(ssim(a, b).numpy(), ref_ssim, rtol=1e-7)
    np.testing.assert_allclose(psnr(a, b).numpy(), ref_psnr, rtol=1e-7)
    np.testing.assert_allclose(l2_distance(a, b).numpy(), np.sqrt(((au - bu) ** 2).sum((1, 2, 3))), rtol=1e-7)


def test_translation_metrics_identity_accuracy():
    from vision.classifier import ClassifierConfig, FeatureClassifier

    torch.manual_seed(0)
    ev = FeatureClassifier(ClassifierConfig(in_channels=1, num_classes=20, width=8, feature_dim=16)).eval()
    x = _images(40, seed=9)
    with torch.no_grad():
        pred = ev(x).argmax(1)
    out = translation_metrics(x, x, _images(40, seed=10), ev, source_labels=pred % 10, label_of="digit")
    assert out["identity_accuracy"] == 1.0 and out["ssim"] == pytest.approx(1.0) and out["l2"] == 0.0
    assert set(out) == {"fid", "ssim", "psnr", "l2", "identity_accuracy"}


def test_sklearn_digits_split():
    tr, ytr = load_sklearn_digits("train", size=16)
    te, yte = load_sklearn_digits("test", size=16)
    assert tr.shape[1:] == (1, 16, 16) and len(tr) + len(te) == 1797
    assert -1.0 <= float(tr.min()) and float(tr.max()) <= 1.0
    assert (torch.bincount(yte, minlength=10) >= 35).all()
    all_x, _ = load_sklearn_digits("all")
    flat = {tuple(v) for v in all_x.flatten(1).tolist()}
    assert len(flat) > 1700
    te8, _ = load_sklearn_digits("test")
    tr8, _ = load_sklearn_digits("train")
    assert not ({tuple(v) for v in te8.flatten(1).tolist()} & {tuple(v) for v in tr8.flatten(1).tolist()})


def test_score_model_folder_round_trip(tmp_path):
    den = _den()
    den.net.save_pretrained(tmp_path / "m")
    from vision.egsde.models import load_score_model

    back = load_score_model(tmp_path / "m", 1000)
    x = _images()
    torch.testing.assert_close(back.net(x, torch.full((4,), 10.0)), den.net(x, torch.full((4,), 10.0)))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text(json.dumps({"_class_name": "Other"}))
    with pytest.raises(ValueError, match="holds a 'Other' model"):
        load_score_model(tmp_path / "bad")


def test_diffusers_unet_folder_as_score_model(tmp_path):
    from diffusers import DDPMScheduler, UNet2DModel

    from vision.egsde.models import load_score_model

    torch.manual_seed(0)
    x = _images()
    blocks = {"down_block_types": ("DownBlock2D",) * 2, "up_block_types": ("UpBlock2D",) * 2}
    unet = UNet2DModel(sample_size=SIZE, in_channels=1, out_channels=1, block_out_channels=(8, 16),
                       layers_per_block=1, norm_num_groups=4, **blocks)  # fmt: skip
    unet.save_pretrained(tmp_path / "unet")
    DDPMScheduler(num_train_timesteps=1000, clip_sample=False).save_pretrained(tmp_path / "scheduler")
    torch.testing.assert_close(load_score_model(tmp_path).net(x, torch.full((4,), 3.0)), unet(x, 3).sample)
    den = load_score_model(tmp_path / "unet")
    k = 250
    expected = unet(x, torch.full((4,), k)).sample
    torch.testing.assert_close(den.eps(x, torch.full((4,), (k + 1) / 1000, dtype=torch.float64)), expected)
    y = translate(den, x, TranslateSettings(method="ilvr", m=0.2, steps=2, factor=2),
                  generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert y.shape == x.shape


def test_trained_models_start_from_the_seed_whatever_ran_before(tmp_path):
    from vision.egsde.models import ModelSettings, train_domain_classifier, train_score_model

    s = ModelSettings(unet_channels=8, unet_mults=(1, 2), score_steps=2, score_batch=4, classifier_channels=8,
                      classifier_mults=(1, 2), classifier_steps=2, classifier_batch=4, groups=4)  # fmt: skip
    g = torch.Generator().manual_seed(0)
    src, tgt = torch.rand(8, 1, 8, 8, generator=g) * 2 - 1, torch.rand(8, 1, 8, 8, generator=g) * 2 - 1
    models = []
    for run in ("a", "b"):
        torch.rand(100 if run == "b" else 1)  # whatever ran before in the process
        den = train_score_model(tgt, s, tmp_path / run / "score", device="cpu", progress=False)
        clf = train_domain_classifier(
            src, tgt, den.schedule, s, tmp_path / run / "clf", device="cpu", progress=False
        )
        models.append((den.net.state_dict(), clf.state_dict()))
    for first, second in zip(*models, strict=True):
        assert first.keys() == second.keys()
        assert all(torch.equal(first[k], second[k]) for k in first)

"""The image benchmark's 2-D SDS/VSD stage at its smoke size."""

import torch

from benchmarks.distill2d import DISTILL2D_PRESETS, run_distill2d


def test_distill2d_smoke(tmp_path):
    torch.set_num_threads(1)
    m = run_distill2d(DISTILL2D_PRESETS["smoke"], tmp_path)
    assert set(m["results"]) >= {"sds", "vsd"} and (tmp_path / "sds_vs_vsd.png").is_file()
    assert all(r["sliced_wasserstein"] >= 0 for r in m["results"].values())

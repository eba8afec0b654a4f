import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("ANNEAL_DATA", str(tmp_path / "anneal"))
    return tmp_path / "anneal"

"""Test-wide settings: dlkit's caches go to a temporary folder, never the user's home."""
import pytest


@pytest.fixture(autouse=True)
def _isolated_caches(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("DLKIT_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "dlkit-cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path_factory.getbasetemp() / "torch-home"))  # torch.hub's weights cache
    monkeypatch.delenv("DLKIT_WEIGHTS_MIRROR", raising=False)

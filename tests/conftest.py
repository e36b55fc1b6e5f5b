"""Test-wide settings: dlkit's caches go to a temporary folder, never the user's home."""
import pytest


@pytest.fixture(autouse=True)
def _isolated_caches(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("DLKIT_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "dlkit-cache"))

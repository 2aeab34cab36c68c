import pytest


@pytest.fixture(autouse=True)
def _no_inherited_fault(monkeypatch):
    monkeypatch.delenv("ISOBENCH_FAULT", raising=False)


@pytest.fixture(autouse=True)
def _private_results_db(monkeypatch, tmp_path):
    """Every test (and every isobench it starts) records into its own database, never ./isobench-results."""
    monkeypatch.setenv("ISOBENCH_DB", str(tmp_path / "isobench.db"))

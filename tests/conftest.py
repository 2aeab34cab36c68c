import pytest


@pytest.fixture(autouse=True)
def _no_inherited_fault(monkeypatch):
    monkeypatch.delenv("ISOBENCH_FAULT", raising=False)

import importlib.util
import signal
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

# A test run started in the background (nohup, `cmd &` in a script) inherits SIGINT ignored; Python then never
# raises KeyboardInterrupt, neither in pytest nor in the isobench processes the tests start (children inherit an
# ignored signal). The interrupt tests send SIGINT, so give it back its default meaning.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def _no_inherited_fault(monkeypatch):
    monkeypatch.delenv("ISOBENCH_FAULT", raising=False)


@pytest.fixture(autouse=True)
def _private_results_db(monkeypatch, tmp_path):
    """Every test (and every isobench it starts) records into its own database, never ./isobench-results."""
    monkeypatch.setenv("ISOBENCH_DB", str(tmp_path / "isobench.db"))


@pytest.fixture(scope="session")
def benchmark_script():
    """Import a script of benchmarks/ (scripts, not a package) by name, e.g. ``benchmark_script("overhead")``."""
    def load(name: str):
        spec = importlib.util.spec_from_file_location(f"{name}_benchmark", BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    return load

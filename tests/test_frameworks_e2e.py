"""End to end with the real frameworks, each in its own worker process (slow: imports all three)."""
import os
import queue
from concurrent.futures import ThreadPoolExecutor

import pytest

from isobench.backends import DEFAULT_FRAMEWORKS, get_backend, installed_frameworks
from isobench.results import ResultSet
from isobench.runner import RunConfig, run_benchmark
from isobench.runner.parity import run_parity
from isobench.workloads import SCALABLE, get_workload, list_workloads
from isobench.workloads.spec import LIBRARY_ATOL

pytestmark = pytest.mark.slow
FRAMEWORKS = installed_frameworks()
needs_all = pytest.mark.skipif(len(FRAMEWORKS) < len(DEFAULT_FRAMEWORKS),
                               reason=f"needs torch, tensorflow and jax installed; have {FRAMEWORKS}")
CELLS = [(f, get_backend(f).modes[0]) for f in FRAMEWORKS]  # the neutral optimizers
# the compute-bound workloads are checked at their parity scale in tests/test_compute_bound.py (and in process, in
# tests/test_zoo_backends.py); one epoch of them at full scale takes hours on a CPU
ALL = [w.name for w in list_workloads() if w.name not in SCALABLE]
# also checked with the library optimizers (torch.optim's defaults, optax, Keras), against the same reference run:
# SGD, SGD momentum (Keras's form is the spec's at a constant rate) and Adam, whose Keras form departs from the spec
# by design (looser stated tolerances, LIBRARY_ATOL)
LIBRARY = ("seed-mlp", "lenet5", "lstm-digits")


def on_each_cpu(jobs: dict) -> dict:
    """Run the jobs (name -> callable) as many at a time as there are CPUs, each pool thread pinned to a CPU of
    its own. Linux affinity is per thread and a child process inherits its creator's, so the single-threaded
    workers a job starts run on that CPU alone: two workers never share one. These tests check results, not
    timings, so they may run side by side; this halves their time on two cores."""
    cpus = queue.SimpleQueue()
    for cpu in sorted(os.sched_getaffinity(0)):
        cpus.put(cpu)
    with ThreadPoolExecutor(len(os.sched_getaffinity(0)),
                            initializer=lambda: os.sched_setaffinity(0, {cpus.get()})) as pool:
        futures = {name: pool.submit(job) for name, job in jobs.items()}
        return {name: f.result() for name, f in futures.items()}


@pytest.fixture(scope="module")
def parity_reports():
    library = [(f, m, "fp32", "library") for f, m in CELLS]
    return on_each_cpu({w: (lambda w=w: run_parity(w, CELLS + library * (w in LIBRARY), threads=1)) for w in ALL})


@needs_all
@pytest.mark.parametrize("workload", ALL)
def test_parity_of_every_builtin_workload_across_three_frameworks(workload, parity_reports):
    report = parity_reports[workload]
    assert report.passed, [(f.framework, f.status, f.error, [c for c in f.checks if not c.passed])
                           for f in report.frameworks] + [c for c in report.cross if not c.passed]
    assert [(f.framework, f.optimizer) for f in report.frameworks] == \
        [(f, o) for o in ("neutral", "library")[:1 + (workload in LIBRARY)] for f in ("torch", "tensorflow", "jax")]
    names = {c.name for f in report.frameworks for c in f.checks}
    assert "initial logits" in names and any(n.startswith("step-0 gradients") for n in names)
    assert ("BatchNorm moving statistics" in names) == bool(get_workload(workload).state_shapes())
    if workload == "seed-mlp":  # the core acceptance: all 10 epochs within 1e-4, identical accuracy
        for f in report.frameworks:
            checks = {c.name: c for c in f.checks}
            assert checks["epoch mean loss, 10 epochs"].tolerance == 1e-4 and checks["epoch mean loss, 10 epochs"].passed
            assert checks["test accuracy"].max_abs_diff == 0
    if workload == "lstm-digits":  # Keras's Adam (TensorFlow's library) within its stated tolerances, said so
        [tf] = [f for f in report.frameworks if (f.framework, f.optimizer) == ("tensorflow", "library")]
        first = next(c for c in tf.checks if c.name.startswith("loss, first"))
        assert first.tolerance == LIBRARY_ATOL["loss_atol"] and 1e-5 < first.max_abs_diff <= first.tolerance
        assert any(n.startswith("library optimizer of TensorFlow: Keras's Adam") for n in report.notes)
        assert {c.name for c in report.cross} >= {"epoch mean loss between frameworks (library)"}


@needs_all
def test_every_workload_reaches_its_band_in_every_framework_with_identical_inputs(tmp_path):
    # parity=False: the parity of every workload is the fixture's (the same check, not run twice)
    parts = on_each_cpu({w: (lambda w=w: run_benchmark(RunConfig(workloads=[w], frameworks=FRAMEWORKS, repeats=1,
                                                                  threads=1), parity=False, peaks=False)) for w in ALL})
    rs = parts[ALL[0]]
    rs.runs = [r for w in ALL for r in parts[w].runs]
    # the side-by-side workers each had a CPU of their own (see on_each_cpu)
    assert {tuple(r.environment["threads"]["affinity"]) for r in rs.runs} == \
        {(cpu,) for cpu in sorted(os.sched_getaffinity(0))[:len(ALL)]}
    assert [r.status for r in rs.runs] == ["ok"] * len(ALL) * 3, [(r.spec, r.error) for r in rs.runs if not r.ok]
    for r in rs.runs:
        w, m = get_workload(r.spec.workload), r.metrics
        value = m.test_loss if w.metric == "loss" else m.test_accuracy
        assert w.accuracy_band[0] <= value <= w.accuracy_band[1], (r.spec, value)
        assert m.time_to_target_s is not None and 0 < m.time_to_target_s <= m.train_time_s, r.spec
        assert len(m.epoch_test_losses) == w.epochs and m.epoch_losses[-1] < m.epoch_losses[0]
        assert 0 < m.step_time_median_s < m.train_time_s and m.first_step_s > 0 and m.import_s > 0
        # ru_maxrss and VmHWM are counted apart by the kernel: a few KiB either way
        assert 50 * 2**20 < m.rss_after_import_bytes and m.train_peak_rss_bytes <= 1.01 * m.process_peak_rss_bytes
        assert r.environment["framework"]["version"]
        assert r.fingerprints["loaded_weights"] == r.fingerprints["init_weights"]
    for w in ALL:
        runs = [r for r in rs.runs if r.spec.workload == w]
        for key in ("data", "orders", "init_weights", "loaded_weights"):
            assert len({r.fingerprints[key] for r in runs}) == 1, (w, key)
    rs.write_json(tmp_path / "r.json")
    back = ResultSet.read_json(tmp_path / "r.json")
    assert [r.to_dict() for r in back.runs] == [r.to_dict() for r in rs.runs]

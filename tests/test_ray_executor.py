"""The Ray executor on a real two-node Ray cluster on loopback (a head and a second node, each with one
``isobench_slot``), with real worker processes of the framework-free numpy reference."""
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from isobench.cli import main
from isobench.errors import UserError
from isobench.results import CRASHED, FAILED, OK
from isobench.runner import RunConfig, iter_runs
from isobench.runner.executor import make_executor
from isobench.store import Store

NODE = {"num_cpus": 1, "resources": {"isobench_slot": 1}}


@pytest.fixture(scope="module")
def cluster():
    """Head plus one more node, bound to 127.0.0.1 only (Ray otherwise binds and dials the machine's outward
    address); the variables reach the isobench processes the tests start."""
    pytest.importorskip("ray")
    from ray._private import ray_constants
    from ray.cluster_utils import Cluster

    had_auth_mode = "RAY_AUTH_MODE" in os.environ
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR, "0")  # read when ray is imported
        mp.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)    # this process imported it already
        # worker_niceness 0: as README's RAY_worker_niceness=0 ray start (the head hands it to every node)
        c = Cluster(initialize_head=True, head_node_args={**NODE, "include_dashboard": False,
                                                          "_system_config": {"worker_niceness": 0}})
        try:
            c.add_node(**NODE)
            c.wait_for_nodes()
            yield c
        finally:
            c.shutdown()
            if not had_auth_mode:  # the new head turned token auth on in this process's environment
                os.environ.pop("RAY_AUTH_MODE", None)


def _config(cluster, repeats):
    return RunConfig(workloads=["seed-mlp"], frameworks=["numpy"], repeats=repeats, threads=1, executor="ray",
                     ray_address=cluster.address)


def _node_ids(cluster):
    return {n.node_id for n in [cluster.head_node, *cluster.worker_nodes]}


@pytest.mark.slow
def test_plan_runs_across_both_nodes_each_record_with_its_nodes_environment(cluster):
    import ray

    started = []
    records = list(iter_runs(_config(cluster, repeats=4), on_event=lambda spec, e: started.append((spec, e))))
    assert [(s.repeat, e) for s, e in started] == [(r, {"event": "start"}) for r in range(4)]  # plan order
    assert all(r.status == OK for r in records), [r.error for r in records]
    assert sorted(r.order for r in records) == [0, 1, 2, 3]
    # two slots: the first two cells went to different nodes
    assert {r.environment["node"]["id"] for r in records} == _node_ids(cluster)
    for r in records:
        host, node = r.environment["host"], r.environment["node"]
        assert node["ip"] == "127.0.0.1" and node["niceness"] == 0 and host["hostname"] == node["hostname"]
        assert host["packages"]["numpy"] and host["logical_cores"] and host["python"]
        assert r.environment["threads"]["env"]["OMP_NUM_THREADS"] == "1"  # the worker's own record is kept
        assert r.metrics.test_accuracy > 0.8 and r.metrics.process_peak_rss_bytes
    assert not ray.is_initialized()  # the executor connected, so it disconnected


@pytest.mark.slow
def test_cli_stores_every_cell_with_its_nodes_environment(cluster, tmp_path):
    db = tmp_path / "results.db"
    p = subprocess.run([sys.executable, "-m", "isobench", "run", "--frameworks", "numpy", "--threads", "1",
                        "--repeats", "2", "--no-parity", "--warmup", "0", "--executor", "ray", "--ray-address",
                        cluster.address, "--db", str(db)], capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr
    assert "executor ray" in p.stderr
    with Store(db) as store:
        results = store.load()
    assert len(results.runs) == 2 and all(r.ok for r in results.runs)
    assert {r.environment["node"]["id"] for r in results.runs} == _node_ids(cluster)
    assert all(r.environment["host"]["cpu_model"] for r in results.runs)


@pytest.mark.slow
def test_a_failing_cell_is_a_failed_record_and_the_others_run(cluster, monkeypatch):
    monkeypatch.setenv("ISOBENCH_FAULT", "exit:numpy:1")  # forwarded to the nodes' workers
    records = {r.spec.repeat: r for r in iter_runs(_config(cluster, repeats=2))}
    assert records[0].status == OK
    failed = records[1]
    assert failed.status == FAILED and failed.exit_code == 3 and "injected fault" in failed.stderr_tail
    assert failed.environment["node"]["id"] in _node_ids(cluster)


def _hanging_cells(marker):
    """{pid: task file} of this test's worker processes, found by the marker in their environment."""
    out = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker.encode() in environ:
            out[int(pid)] = next((c for c in cmd if c.endswith(b".task.json")), None)
    return out


@pytest.mark.slow
def test_a_lost_node_is_a_crashed_record_naming_it_and_an_interruption_stops_the_rest(cluster, monkeypatch):
    marker = f"marker-{uuid.uuid4().hex}"  # an unknown fault kind: ignored by the worker, findable in /proc
    monkeypatch.setenv("ISOBENCH_FAULT", f"hang:numpy,{marker}")
    doomed = cluster.add_node(**NODE)
    cluster.wait_for_nodes()
    runs = iter_runs(_config(cluster, repeats=3))

    def lose_node():  # once a cell hangs on every node
        deadline = time.monotonic() + 60
        while len(set(_hanging_cells(marker).values())) < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        cluster.remove_node(doomed, allow_graceful=False)

    threading.Thread(target=lose_node, daemon=True).start()
    try:
        record = next(runs)
        assert record.status == CRASHED, record.error
        assert "NodeDiedError" in record.error and doomed.node_id in record.error
        assert record.lost  # so --resume runs the cell again (test_faults: the resume side)
        runs.close()  # as on Ctrl-C: the two cells still hanging are cancelled and their workers killed
        left = _hanging_cells(marker)
        assert len(set(left.values())) <= 1, left  # only the lost node's orphan remains
    finally:
        for pid in _hanging_cells(marker):  # the worker the lost node left behind
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass


@pytest.mark.slow
def test_parity_runs_through_the_ray_executor(cluster, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("isobench.runner.local.subprocess", None)  # a worker started here, not on a node, would fail
    db = tmp_path / "results.db"
    assert main(["run", "--frameworks", "numpy", "--threads", "1", "--repeats", "1", "--executor", "ray",
                 "--ray-address", cluster.address, "--db", str(db)]) == 0, capsys.readouterr().err
    assert "Parity seed-mlp: PASSED" in capsys.readouterr().err
    with Store(db) as store:
        results = store.load()
    [numpy] = results.parity["seed-mlp"].frameworks
    assert numpy.status == "ok" and numpy.passed and len(numpy.checks) == 5  # the captures came back


@pytest.mark.slow
def test_cuda_on_a_cluster_without_gpus_is_one_line_before_the_session_is_recorded(cluster, tmp_path):
    db = tmp_path / "results.db"  # with the parity check: it once bypassed the executor and hit a traceback
    p = subprocess.run([sys.executable, "-m", "isobench", "run", "--frameworks", "numpy", "--threads", "1",
                        "--repeats", "1", "--executor", "ray", "--ray-address", cluster.address, "--device", "cuda",
                        "--db", str(db)], capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip().splitlines() == ["isobench: error: --executor ray: the Ray cluster has no GPU"]
    with Store(db) as store:
        assert store.sessions() == []


def test_without_ray_the_executor_says_how_to_install_it(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    with pytest.raises(UserError, match=r"^--executor ray needs Ray: pip install 'isobench\[ray\]'$"):
        make_executor("ray")
    assert main(["run", "--frameworks", "numpy", "--repeats", "1", "--no-parity", "--executor", "ray"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "isobench: error: --executor ray needs Ray: pip install 'isobench[ray]'"
    assert "Traceback" not in "\n".join(err)

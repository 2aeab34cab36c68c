"""The session's typed records (parity, peaks, privacy) read from every stored form and written back byte-identical,
and the parity table: one model (a row per check, a column per cell) rendered by the terminal, HTML and Markdown."""
import json
import re
import sqlite3
from dataclasses import fields, replace
from html.parser import HTMLParser
from pathlib import Path

from isobench.report import model
from isobench.report.html import render_html
from isobench.report.markdown import render_markdown
from isobench.report.parity import render_parity
from isobench.report.sessions import parity_line
from isobench.results import (OK, FrameworkParity, ParityCheck, ParityResult, PeakRecord, PrivacyRecord, ResultSet,
                              to_dicts)
from isobench.store import Store
from isobench.store.db import _dumps
from isobench.workloads.privacy import Guarantee
from test_report import runs  # known seed-mlp runs: torch, tensorflow, jax x 5 repeats

DATA = Path(__file__).parent / "data"
GOLDEN = json.loads((DATA / "golden" / "session.json").read_text())["parity"]["seed-mlp"]  # precision, no optimizer


def _same_json(record, stored: dict) -> bool:
    """Written back exactly as stored: the same keys, values and order."""
    return json.dumps(record.to_dict()) == json.dumps(stored)


def test_every_stored_parity_form_reads_typed_and_writes_back_as_stored():
    oldest = {**GOLDEN, "frameworks": [{k: v for k, v in f.items() if k != "precision"} for f in GOLDEN["frameworks"]]}
    current = {**GOLDEN, "frameworks": [  # today's: the optimizer implementation after the precision
        {**{k: f[k] for k in ("framework", "mode", "precision")}, "optimizer": "library",
         **{k: f[k] for k in ("status", "error", "passed", "checks")}} for f in GOLDEN["frameworks"]]}
    for stored in (oldest, GOLDEN, current):
        p = ParityResult.from_dict(stored)
        assert _same_json(p, stored) and p.passed and p.metric == "test accuracy"
        assert [f.cell.precision for f in p.frameworks] == ["fp32"] * 3  # sessions before the axes: fp32, neutral
        assert {f.optimizer for f in p.frameworks} == {"library" if stored is current else "neutral"}
    made = ParityResult(p.workload, p.reference_accuracy, tuple(replace(f, stored=None) for f in p.frameworks),
                        p.cross)
    assert _same_json(made, current)  # a record made now writes today's whole form, the verdicts derived


def test_a_v1_database_session_exports_its_parity_byte_identical(tmp_path):
    path = tmp_path / "v1.db"
    with sqlite3.connect(path) as c:
        c.executescript((DATA / "v1.sql").read_text())
    with Store(path) as store:  # migrated to the current schema on opening
        [stored] = store.conn.execute("SELECT parity FROM sessions WHERE id = 1").fetchone()
        results = store.load(1)
    assert isinstance(results.parity["seed-mlp"], ParityResult) and _dumps(to_dicts(results.parity)) == stored
    assert json.dumps(ResultSet.from_dict(results.to_dict()).to_dict()["parity"]) == \
        json.dumps(json.loads(stored))


def test_peak_records_of_every_form_read_typed_and_write_back_as_stored():
    schema3 = {"framework": "torch", "version": "2.13.0", "device": "cpu", "threads": 2, "repeats": 3,
               "min_time": 0.2, "matmul": [{"precision": "fp32", "gflops": 120.5, "size": 1024}], "copy_gbps": 9.1,
               "copy_bytes": 268435456, "settings": {"threads": 2}, "host": "vm", "cpu_model": "AMD EPYC",
               "measured_at": "2026-11-30T10:00:00+00:00"}  # before contention, trials, load, nominal
    current = {**schema3, "trials": 2, "contention": [{"fraction": 0.4, "contended": True}, None], "contended": True,
               "pinned": {"affinity": [0, 1]}, "load_average_1m": 0.31, "nominal": {"gflops": None, "reason": "x"},
               "module_version": "2.13.0+cpu", "reused": True, "warning": "old", "measured_again": {"error": "boom"}}
    error = {"framework": "jax", "error": "not installed"}
    for stored in (schema3, current, error):
        assert _same_json(PeakRecord.from_dict(stored), stored)
    old, new, failed = map(PeakRecord.from_dict, (schema3, current, error))
    assert (old.rate(), old.rate("bf16"), old.contention, old.contended, old.reused) == (120.5, None, [], None, False)
    assert (new.contended, new.load_average_1m, new.extra["pinned"], failed.error, failed.rate()) == \
        (True, 0.31, {"affinity": [0, 1]}, "not installed", None)
    assert list(replace(old, reused=True, warning="w").to_dict())[-3:] == ["measured_at", "reused", "warning"]


def test_privacy_records_mirror_the_guarantee_and_write_back_as_stored():
    assert [f.name for f in fields(PrivacyRecord) if f.name not in ("extra", "stored")] == \
        [f.name for f in fields(Guarantee)] + ["counterpart"]
    g = Guarantee(2.04, 1e-4, 1.1, "poisson", 0.0223, 450, "dp-accounting PLD", clip=1.0, n_train=1438,
                  orders=(1.5, 2.0), epsilon_rdp=2.33, epsilon_pld=2.04, pld_discretization=1e-4)
    stored = {**g.to_dict(), "counterpart": "seed-mlp"}
    record = PrivacyRecord.from_dict(stored)
    assert _same_json(record, stored) and (record.epsilon, record.counterpart) == (2.04, "seed-mlp")


def _check(name, diff, tol=1e-5):
    return ParityCheck(name, diff, tol)


def failing_result() -> ParityResult:
    """seed-mlp checked in four cells: torch within every tolerance, tensorflow crashed, jax one loss beyond its
    tolerance, torch's library optimizer within its looser ones; checks between the neutral cells."""
    def checks(logits, first, epoch, tol=1e-5):
        return (_check("initial logits", logits, tol), _check("loss, first 20 steps", first, tol),
                _check("epoch mean loss, 10 epochs", epoch, 10 * tol), _check("test accuracy", 0.0, 0.0))
    return ParityResult("seed-mlp", 0.8774, (
        FrameworkParity("torch", "eager", OK, checks=checks(2.32e-7, 3.48e-7, 9.02e-8)),
        FrameworkParity("tensorflow", "graph", "crashed", "worker killed by signal SIGSEGV"),
        FrameworkParity("jax", "jit", OK, checks=checks(2.29e-7, 3.1e-5, 8.62e-8)),
        FrameworkParity("torch", "eager", OK, checks=checks(2.4e-6, 1.7e-4, 3.3e-5, tol=1e-3), optimizer="library")),
        (_check("epoch mean loss between frameworks", 5.3e-8, 1e-4), _check("test accuracy between frameworks", 0, 0)))


TABLE = """\
Parity on seed-mlp: each framework against a float64 numpy reference (reference test accuracy 87.74%) and against each other
  check                               tolerance  PyTorch (eager)  TensorFlow (graph)       JAX (jit)      PyTorch (eager, library)        between frameworks
  verdict                                        PASS             CRASHED                  FAIL           PASS                            PASS
  initial logits                      1e-05      2.32e-07 PASS    worker killed by signal  2.29e-07 PASS  2.4e-06 PASS (tolerance 1e-03)
  loss, first 20 steps                1e-05      3.48e-07 PASS    SIGSEGV                  3.1e-05 FAIL   1.7e-04 PASS (tolerance 1e-03)
  epoch mean loss, 10 epochs          1e-04      9.02e-08 PASS                             8.62e-08 PASS  3.3e-05 PASS (tolerance 1e-02)
  test accuracy                       0          0 PASS                                    0 PASS         0 PASS
  epoch mean loss between frameworks  1e-04                                                                                               5.3e-08 PASS
  test accuracy between frameworks    0                                                                                                   0 PASS
  note: library optimizers against their looser tolerances
Parity FAILED for seed-mlp"""


def test_the_parity_table_model_and_its_terminal_rendering():
    p = model.parity_table(failing_result())
    assert p.state == model.PARITY_FAILED and p.reference == "test accuracy 87.74%"
    assert [(c.label, c.status, c.passed) for c in p.columns] == [
        ("PyTorch (eager)", OK, True), ("TensorFlow (graph)", "crashed", False), ("JAX (jit)", OK, False),
        ("PyTorch (eager, library)", OK, True), (model.BETWEEN, OK, True)]
    first = p.rows[1]
    assert (first.check, first.tolerance) == ("loss, first 20 steps", "1e-05")
    assert first.values == (model.ParityValue("3.48e-07", True), None, model.ParityValue("3.1e-05", False),
                            model.ParityValue("1.7e-04", True, "1e-03"), None)
    assert render_parity(failing_result(), ["library optimizers against their looser tolerances"]) == TABLE
    assert parity_line(failing_result()) == (
        "Parity seed-mlp: FAILED (TensorFlow (graph) crashed: worker killed by signal SIGSEGV; JAX (jit) loss, first "
        "20 steps 3.1e-05 > tolerance 1e-05)")


class _ParityTable(HTMLParser):
    """The cells of the HTML report's parity table, row by row, with the class of each."""

    def __init__(self):
        super().__init__()
        self.rows, self.inside, self.cell = [], False, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self.inside = attrs.get("class") == "parity"
        elif self.inside and tag == "tr":
            self.rows.append([])
        elif self.inside and tag in ("th", "td"):
            self.cell = [attrs.get("class") or "", ""]

    def handle_endtag(self, tag):
        if tag == "table":
            self.inside = False
        elif self.inside and tag in ("th", "td") and self.cell:
            self.rows[-1].append((self.cell[0], self.cell[1].strip()))
            self.cell = None

    def handle_data(self, data):
        if self.cell:
            self.cell[1] += data


def test_the_html_and_markdown_reports_show_the_parity_table(monkeypatch):
    for module in ("html", "markdown"):  # text only: no figures drawn
        monkeypatch.setattr(f"isobench.report.{module}.render_plots", lambda summary, runs, efficiency=None: [])
    results = ResultSet(config={}, environment={}, runs=runs(), parity={"seed-mlp": failing_result()})
    parser = _ParityTable()
    parser.feed(render_html(results))
    heads, verdict, logits, first, *_, between = parser.rows
    assert [t for _, t in heads] == ["check", "tolerance", "PyTorch (eager)", "TensorFlow (graph)", "JAX (jit)",
                                     "PyTorch (eager, library)", "between frameworks"]
    assert verdict == [("", "verdict"), ("", ""), ("pass", "PASS"), ("fail", "CRASHED"), ("fail", "FAIL"),
                       ("pass", "PASS"), ("pass", "PASS")]
    # the crashed cell's error once, down its column; the other cells with their value and verdict
    assert logits[3] == ("fail", "worker killed by signal SIGSEGV") and len(logits) == 7 and len(first) == 6
    assert first == [("", "loss, first 20 steps"), ("num", "1e-05"), ("num pass", "3.48e-07 PASS"),
                     ("num fail", "3.1e-05 FAIL"), ("num pass", "1.7e-04 PASS (tolerance 1e-03)"), ("num", "")]
    assert between[0] == ("", "test accuracy between frameworks") and between[-1] == ("num pass", "0 PASS")
    md = render_markdown(results)
    table = [[c.strip() for c in line.strip().strip("|").split("|")] for line in md.splitlines()
             if re.match(r"\s+\| (check|verdict|loss, first|epoch mean loss between)", line)]
    assert table == [
        ["check", "tolerance", "PyTorch (eager)", "TensorFlow (graph)", "JAX (jit)", "PyTorch (eager, library)",
         "between frameworks"],
        ["verdict", "", "PASS", "CRASHED: worker killed by signal SIGSEGV", "FAIL", "PASS", "PASS"],
        ["loss, first 20 steps", "1e-05", "3.48e-07 PASS", "", "3.1e-05 FAIL", "1.7e-04 PASS (tolerance 1e-03)", ""],
        ["epoch mean loss between frameworks", "1e-04", "", "", "", "", "5.3e-08 PASS"]]
    assert "**seed-mlp** parity: FAILED" in md

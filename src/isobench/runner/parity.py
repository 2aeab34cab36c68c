"""``isobench parity``: prove that every framework does the same work.

Each framework trains the workload in its own worker from the identical inputs file, capturing the
initial logits, the step-0 gradients and every step's loss. The parent computes the same quantities
with the float64 numpy reference and compares, against the workload's stated absolute tolerances."""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..backends.reference import ReferenceTrainer
from ..data import batches
from ..results import OK, RunSpec
from ..workloads import get_workload
from .inputs import read_inputs, write_inputs
from .local import EventHandler, run_cell


@dataclass(frozen=True)
class Check:
    """One compared quantity: the largest absolute difference seen and the tolerance it must meet."""
    name: str
    max_abs_diff: float
    tolerance: float

    @property
    def passed(self) -> bool:
        return bool(self.max_abs_diff <= self.tolerance)


@dataclass
class FrameworkParity:
    framework: str
    mode: str
    status: str
    error: str | None = None
    checks: list[Check] = field(default_factory=list)
    test_accuracy: float | None = None
    epoch_losses: list[float] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.status == OK and all(c.passed for c in self.checks)


@dataclass
class ParityReport:
    workload: str
    steps: int                       # first steps compared one by one
    reference_accuracy: float
    reference_epoch_losses: list[float]
    frameworks: list[FrameworkParity]
    cross: list[Check]               # between frameworks, largest pairwise difference
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.frameworks) and all(f.passed for f in self.frameworks) and all(c.passed for c in self.cross)


def _max_diff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def reference_run(workload, data, orders, params, capture_steps: int) -> dict:
    """float64 numpy reference for the same inputs: initial logits, step-0 grads, losses, accuracy."""
    ref = ReferenceTrainer(workload, params, data)
    out = {"logits": ref.logits(data.x_test), "grads": ref.gradients(batches(orders[0], workload.batch_size)[0])}
    step_losses, epoch_losses = [], []
    for order in orders:
        losses = [ref.train_step(idx) for idx in batches(order, workload.batch_size)]
        step_losses.extend(losses)
        epoch_losses.append(float(np.mean(losses)))
    out.update(step_losses=np.array(step_losses), epoch_losses=epoch_losses, accuracy=ref.evaluate()[1])
    return out


def run_parity(workload_name: str, cells: list[tuple[str, str]], threads: int, timeout: float | None = 600.0,
               on_event: EventHandler | None = None) -> ParityReport:
    """Run every (framework, mode) once with capture on and compare with the float64 reference."""
    workload = get_workload(workload_name)
    tol = workload.parity
    with tempfile.TemporaryDirectory(prefix="isobench-parity-") as tmp:
        work = Path(tmp)
        inputs = write_inputs(workload, work / "inputs.npz")
        data, orders, params = read_inputs(inputs)
        ref = reference_run(workload, data, orders, params, tol.steps)
        results = []
        for order, (fw, mode) in enumerate(cells):
            spec = RunSpec(workload=workload.name, framework=fw, mode=mode, repeat=0, threads=threads)
            rec = run_cell(spec, inputs, work, order=order, timeout=timeout, capture_steps=tol.steps,
                           on_event=on_event)
            fp = FrameworkParity(fw, mode, rec.status, rec.error)
            if rec.ok:
                with np.load(work / f"run-{order:04d}.result.json.npz") as z:
                    grads = {k[5:]: z[k] for k in z.files if k.startswith("grad:")}
                    k = tol.steps
                    fp.checks = [
                        Check("initial logits", _max_diff(z["logits"], ref["logits"]), tol.forward_atol),
                        Check("step-0 gradients", max(_max_diff(grads[n], g) for n, g in ref["grads"].items()),
                              tol.grad_atol),
                        Check(f"loss, first {k} steps", _max_diff(z["step_losses"][:k], ref["step_losses"][:k]),
                              tol.loss_atol),
                        Check(f"epoch mean loss, {workload.epochs} epochs",
                              _max_diff(rec.metrics.epoch_losses, ref["epoch_losses"]), tol.epoch_loss_atol),
                    ]
                fp.test_accuracy, fp.epoch_losses = rec.metrics.test_accuracy, rec.metrics.epoch_losses
                if tol.equal_accuracy:
                    fp.checks.append(Check("test accuracy", abs(fp.test_accuracy - ref["accuracy"]), 0.0))
            results.append(fp)
    ok = [f for f in results if f.status == OK]
    cross = []
    if len(ok) >= 2:
        cross.append(Check("epoch mean loss between frameworks",
                           max(_max_diff(a.epoch_losses, b.epoch_losses) for a in ok for b in ok),
                           tol.epoch_loss_atol))
        if tol.equal_accuracy:
            accs = [f.test_accuracy for f in ok]
            cross.append(Check("test accuracy between frameworks", max(accs) - min(accs), 0.0))
    notes = ["float32 frameworks compared with a float64 numpy reference on identical weights, data and order",
             "the workload has no dropout or other randomness: nothing was disabled for the check"]
    return ParityReport(workload.name, tol.steps, ref["accuracy"], ref["epoch_losses"], results, cross, notes)

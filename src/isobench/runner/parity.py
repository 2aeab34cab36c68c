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
from .inputs import read_inputs, resolve_workload, write_inputs
from .devices import worker_env
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
    precision: str = "fp32"

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
    metric: str = "test accuracy"    # what reference_accuracy and FrameworkParity.test_accuracy hold

    @property
    def passed(self) -> bool:
        return bool(self.frameworks) and all(f.passed for f in self.frameworks) and all(c.passed for c in self.cross)


def _max_diff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def reference_run(workload, data, orders, params, lrs) -> dict:
    """float64 numpy reference for the same inputs: initial logits, step-0 grads, losses, test metrics, state."""
    ref = ReferenceTrainer(workload, params, data)
    out = {"logits": ref.logits(data.x_test), "grads": ref.gradients(batches(orders[0], workload.batch_size)[0])}
    step_losses, epoch_losses = [], []
    for order in orders:
        losses = [ref.train_step(idx, lrs[len(step_losses) + i])
                  for i, idx in enumerate(batches(order, workload.batch_size))]
        step_losses.extend(losses)
        epoch_losses.append(float(np.mean(losses)))
    test_loss, test_acc = ref.evaluate()
    state = workload.state_shapes()
    out.update(step_losses=np.array(step_losses), epoch_losses=epoch_losses, accuracy=test_acc, test_loss=test_loss,
               state={k: v for k, v in ref.params().items() if k in state})
    return out


def _test_metric(workload, accuracy: float, loss: float) -> float:
    return loss if workload.metric == "loss" else accuracy


def run_parity(workload_name: str, cells: list[tuple[str, ...]], threads: int, timeout: float | None = 600.0,
               on_event: EventHandler | None = None, data_dir: str | None = None, device: str = "cpu",
               gpu: int | None = None) -> ParityReport:
    """Run every cell ``(framework, mode[, precision])`` once with capture on and compare with the float64
    reference, each against the workload's tolerances for its precision (:meth:`ParitySpec.for_precision`).

    The check trains the workload's ``parity.epochs`` epochs (all for seed-mlp) with dropout disabled; the
    comparison between frameworks is made among cells of the same precision."""
    full = resolve_workload(workload_name, data_dir)
    workload = full.for_parity()
    metric = "test loss" if workload.metric == "loss" else "test accuracy"

    def metric_atol(tol) -> float:
        return tol.epoch_loss_atol if workload.metric == "loss" else tol.accuracy_atol

    with tempfile.TemporaryDirectory(prefix="isobench-parity-") as tmp:
        work = Path(tmp)
        inputs = write_inputs(workload, work / "inputs.npz", data_dir)
        data, orders, params, lrs = read_inputs(inputs)
        ref = reference_run(workload, data, orders, params, lrs)
        ref_metric = _test_metric(workload, ref["accuracy"], ref["test_loss"])
        results = []
        for order, (fw, mode, *rest) in enumerate(cells):
            precision = rest[0] if rest else "fp32"
            tol = full.parity.for_precision(precision)
            spec = RunSpec(workload=workload.name, framework=fw, mode=mode, repeat=0, threads=threads, device=device,
                           precision=precision)
            rec = run_cell(spec, workload, inputs, work, order=order, timeout=timeout, capture_steps=tol.steps,
                           on_event=on_event, env=worker_env(device, gpu))
            fp = FrameworkParity(fw, mode, rec.status, rec.error, precision=precision)
            if rec.ok:
                m = rec.metrics
                with np.load(work / f"run-{order:04d}.result.json.npz") as z:
                    grads = {k[5:]: z[k] for k in z.files if k.startswith("grad:")}
                    state = {k[6:]: z[k] for k in z.files if k.startswith("state:")}
                    k = tol.steps
                    fp.checks = [
                        Check("initial logits", _max_diff(z["logits"], ref["logits"]), tol.forward_atol),
                        Check("step-0 gradients", max(_max_diff(grads[n], g) for n, g in ref["grads"].items()),
                              tol.grad_tolerance(max(float(np.max(np.abs(g))) for g in ref["grads"].values()))),
                        Check(f"loss, first {k} steps", _max_diff(z["step_losses"][:k], ref["step_losses"][:k]),
                              tol.loss_tolerance(float(np.max(np.abs(ref["step_losses"][:k]))))),
                        Check(f"epoch mean loss, {workload.epochs} epoch{'s' * (workload.epochs > 1)}",
                              _max_diff(m.epoch_losses, ref["epoch_losses"]), tol.epoch_loss_atol),
                    ]
                    if ref["state"]:
                        fp.checks.append(Check("BatchNorm moving statistics",
                                               max(_max_diff(state[n], v) for n, v in ref["state"].items()),
                                               tol.state_atol))
                fp.test_accuracy, fp.epoch_losses = _test_metric(workload, m.test_accuracy, m.test_loss), m.epoch_losses
                fp.checks.append(Check(metric, abs(fp.test_accuracy - ref_metric), metric_atol(tol)))
            results.append(fp)
    cross = []
    for precision in dict.fromkeys(f.precision for f in results):
        ok = [f for f in results if f.status == OK and f.precision == precision]
        if len(ok) < 2:
            continue
        tol, among = full.parity.for_precision(precision), "" if precision == "fp32" else f" ({precision})"
        cross.append(Check(f"epoch mean loss between frameworks{among}",
                           max(_max_diff(a.epoch_losses, b.epoch_losses) for a in ok for b in ok),
                           tol.epoch_loss_atol))
        values = [f.test_accuracy for f in ok]
        cross.append(Check(f"{metric} between frameworks{among}", max(values) - min(values), metric_atol(tol)))
    low = sorted({f.precision for f in results} - {"fp32"})
    notes = ["float32 frameworks compared with a float64 numpy reference on identical weights, data and order"
             + (f"; {', '.join(low)} cells against the looser mixed-precision tolerances" if low else ""),
             f"trained {workload.epochs} epoch{'s' * (workload.epochs > 1)} of {full.epochs}; "
             + ("dropout disabled for the check" if full.has_dropout() else "the workload has no dropout")]
    return ParityReport(workload.name, full.parity.steps, ref_metric, ref["epoch_losses"], results, cross, notes, metric)

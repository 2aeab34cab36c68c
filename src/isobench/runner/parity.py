"""``isobench parity``: prove that every framework does the same work.

Each framework trains the workload in its own worker, through the session's executor, from the identical
inputs file, capturing the initial logits, the step-0 gradients and every step's loss. The parent computes
the same quantities with the float64 numpy reference and compares, against the workload's stated absolute
tolerances."""
from __future__ import annotations

import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..backends import get_backend
from ..backends.reference import ReferenceBackend
from ..config import EXECUTOR, TIMEOUT_S, detect_gpus, parity_scale, resolve_workload
from ..results import OK, Cell, FrameworkParity, ParityCheck, ParityResult, RunRecord, RunSpec
from ..workloads import SCALABLE
from .executor import Executor, make_executor
from .jobs import Job
from .local import training_task
from .inputs import read_inputs, step_plan, write_inputs
from .local import EventHandler


@dataclass(frozen=True)
class ParityReport(ParityResult):
    """What ``isobench parity`` shows: the :class:`~isobench.results.ParityResult` a session keeps, with the notes
    on how the check was made (reference, epochs, dropout, scale, library optimizers)."""
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Compared:
    """One cell against the reference, with what the checks between cells compare: its epoch mean losses and its
    test metric."""
    parity: FrameworkParity
    epoch_losses: tuple[float, ...] = ()
    metric: float | None = None


def _max_diff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def reference_run(workload, data, orders, params, lrs) -> dict:
    """float64 numpy reference for the same inputs: initial logits, step-0 grads (DP-SGD: the clipped
    per-example sum, before noise), losses, test metrics, state; the same batches as the workers
    (:func:`~isobench.runner.inputs.step_plan`) and, for DP-SGD, the same noise stream."""
    ref = ReferenceBackend().build(workload, params, data, "reference")
    plan = step_plan(workload, orders, len(data.x_train))
    out = {"logits": ref.logits(data.x_test), "grads": ref.gradients(plan.epochs[0][0])}
    step_losses, epoch_losses = [], []
    for steps in plan.epochs:
        losses = [ref.train_step(idx, lrs[len(step_losses) + i]) for i, idx in enumerate(steps)]
        step_losses.extend(losses)
        epoch_losses.append(float(np.mean(losses)))
    test_loss, test_acc = ref.evaluate()
    state = workload.state_shapes()
    out.update(step_losses=np.array(step_losses), epoch_losses=epoch_losses, accuracy=test_acc, test_loss=test_loss,
               state={k: v for k, v in ref.params().items() if k in state})
    return out


def _test_metric(workload, accuracy: float, loss: float) -> float:
    return loss if workload.metric == "loss" else accuracy


def _metric_atol(workload, tol) -> float:
    return tol.epoch_loss_atol if workload.metric == "loss" else tol.accuracy_atol


def library_difference(workload, framework: str, optimizer: str) -> str | None:
    """Why a cell's optimizer departs from the spec's rule by design (its backend's ``library`` form), else None."""
    return get_backend(framework).library_difference(workload) if optimizer == "library" else None


def _tolerances(workload, framework: str, precision: str, optimizer: str):
    """The workload's tolerances for a cell: for its precision, and looser where its library optimizer follows
    its own rule (:meth:`~isobench.workloads.spec.ParitySpec.for_library`)."""
    tol = workload.parity.for_precision(precision)
    return tol.for_library() if library_difference(workload, framework, optimizer) else tol


def run_parity(workload_name: str, cells: Iterable[Cell | tuple[str, ...]], threads: int,
               timeout: float | None = TIMEOUT_S, on_event: EventHandler | None = None, data_dir: str | None = None,
               device: str = "cpu", executor: Executor | None = None, scale: float | None = None) -> ParityReport:
    """Run every cell once with capture on and compare with the float64 reference, each against the workload's
    tolerances for its precision (:meth:`ParitySpec.for_precision`).

    The workers run through ``executor``, the one that measures the session (default: the local executor on
    ``device``, its first GPU on cuda). The check trains the workload's ``parity.epochs`` epochs (all for
    seed-mlp) with dropout disabled; the comparison between frameworks is made among cells of the same
    precision and optimizer implementation. A cell may be given as a ``(framework, mode[, precision[,
    optimizer]])`` tuple (optimizer implementation default: ``neutral``). ``scale``: the workload built at
    that scale (:func:`~isobench.config.resolve_workload`), said so in the notes; ``None``: full size, but a
    compute-bound workload at :data:`~isobench.config.COMPUTE_PARITY_SCALE`."""
    cells = [c if isinstance(c, Cell) else Cell(*c) for c in cells]
    scale = parity_scale(workload_name, None) if scale is None else scale
    full = resolve_workload(workload_name, data_dir, scale)
    workload = full.for_parity()
    own = executor is None
    executor = executor or make_executor(EXECUTOR, device, detect_gpus()[:1] if device == "cuda" else ())
    try:
        with tempfile.TemporaryDirectory(prefix="isobench-parity-") as tmp:
            work = Path(tmp)
            inputs = write_inputs(workload, work / "inputs.npz", data_dir)
            ref = reference_run(workload, *read_inputs(inputs))
            jobs = [parity_job(order, RunSpec(workload=workload.name, framework=c.framework, mode=c.mode, repeat=0,
                                              threads=threads, device=device, precision=c.precision,
                                              optimizer=c.optimizer),
                               workload, inputs, work, timeout, full.parity.for_precision(c.precision).steps)
                    for order, c in enumerate(cells)]
            records = {r.order: r for r in executor.run(jobs, work, on_event)}  # in the order they finish
            results = [_framework_parity(full, workload, ref, records[j.order], Path(j.task["captures"]))
                       for j in jobs]
    finally:
        if own:
            executor.close()
    low = sorted({c.precision for c in cells} - {"fp32"})
    notes = ["float32 frameworks compared with a float64 numpy reference on identical weights, data and order"
             + (f"; {', '.join(low)} cells against the looser mixed-precision tolerances" if low else ""),
             f"trained {workload.epochs} epoch{'s' * (workload.epochs > 1)} of {full.epochs}; "
             + ("dropout disabled for the check" if full.has_dropout() else "the workload has no dropout")]
    notes += _library_notes(full, cells)
    if scale is not None and scale != 1 and workload_name in SCALABLE:
        notes.append(f"checked at scale {scale:g}, not at full scale (a float64 reference of the full model takes "
                     f"hours per step on a CPU): {full.description}")
    return ParityReport(workload.name, _test_metric(workload, ref["accuracy"], ref["test_loss"]),
                        tuple(r.parity for r in results), _cross_checks(full, workload, results), notes=tuple(notes))


def parity_job(order: int, spec: RunSpec, workload, inputs: Path, work: Path, timeout: float | None,
               steps: int) -> Job:
    """A training worker that also writes its parity captures (logits, step-0 gradients, losses, state) to a file
    of ``work`` the executor brings back."""
    return Job(order, (spec,), training_task(spec, workload, inputs, capture=work / f"captures-{order:04d}.npz",
                                             capture_steps=steps),
               files=("inputs",), outputs=("captures",), timeout=timeout)


def _library_notes(workload, cells: list[Cell]) -> list[str]:
    """One note per way a library optimizer of ``cells`` departs from the spec by design, naming the frameworks."""
    by_reason: dict[str, list[str]] = {}
    for c in cells:
        if why := library_difference(workload, c.framework, c.optimizer):
            by_reason.setdefault(why, []).append(get_backend(c.framework).display)
    return [f"library optimizer of {', '.join(dict.fromkeys(names))}: {why}; checked against the looser library "
            "tolerances (LIBRARY_ATOL in workloads/spec.py)" for why, names in by_reason.items()]


def _metric_name(workload) -> str:
    return "test loss" if workload.metric == "loss" else "test accuracy"


def _framework_parity(full, workload, ref: dict, rec: RunRecord, captures: Path) -> _Compared:
    """One cell's record and captures against the reference."""
    spec = rec.spec
    cell = dict(framework=spec.framework, mode=spec.mode, status=rec.status, error=rec.error,
                precision=spec.precision, optimizer=spec.optimizer)
    if not rec.ok:
        return _Compared(FrameworkParity(**cell))
    m, tol = rec.metrics, _tolerances(full, spec.framework, spec.precision, spec.optimizer)
    with np.load(captures) as z:
        grads = {k[5:]: z[k] for k in z.files if k.startswith("grad:")}
        state = {k[6:]: z[k] for k in z.files if k.startswith("state:")}
        k = tol.steps
        checks = [
            ParityCheck("initial logits", _max_diff(z["logits"], ref["logits"]), tol.forward_atol),
            ParityCheck("step-0 gradients" + (", clipped per-example sum" if full.optimizer.private else ""),
                        max(_max_diff(grads[n], g) for n, g in ref["grads"].items()),
                        tol.grad_tolerance(max(float(np.max(np.abs(g))) for g in ref["grads"].values()))),
            ParityCheck(f"loss, first {k} steps", _max_diff(z["step_losses"][:k], ref["step_losses"][:k]),
                        tol.loss_tolerance(float(np.max(np.abs(ref["step_losses"][:k]))))),
            ParityCheck(f"epoch mean loss, {workload.epochs} epoch{'s' * (workload.epochs > 1)}",
                        _max_diff(m.epoch_losses, ref["epoch_losses"]), tol.epoch_loss_atol),
        ]
        if ref["state"]:
            checks.append(ParityCheck("BatchNorm moving statistics",
                                      max(_max_diff(state[n], v) for n, v in ref["state"].items()), tol.state_atol))
    metric = _test_metric(workload, m.test_accuracy, m.test_loss)
    ref_metric = _test_metric(workload, ref["accuracy"], ref["test_loss"])
    checks.append(ParityCheck(_metric_name(workload), abs(metric - ref_metric), _metric_atol(workload, tol)))
    return _Compared(FrameworkParity(**cell, checks=tuple(checks)), tuple(m.epoch_losses), metric)


def _cross_checks(full, workload, results: list[_Compared]) -> tuple[ParityCheck, ...]:
    """Between the frameworks of each precision and optimizer implementation: the largest pairwise epoch-loss and
    test-metric differences, against the loosest tolerances among them."""
    cross = []
    for precision, optimizer in dict.fromkeys((r.parity.precision, r.parity.optimizer) for r in results):
        ok = [r for r in results if r.parity.status == OK and (r.parity.precision, r.parity.optimizer) == (
            precision, optimizer)]
        if len(ok) < 2:
            continue
        tol = max((_tolerances(full, r.parity.framework, precision, optimizer) for r in ok),
                  key=lambda t: t.epoch_loss_atol)
        named = [x for x, plain in ((precision, "fp32"), (optimizer, "neutral")) if x != plain]  # as labels
        among = f" ({', '.join(named)})" if named else ""
        cross.append(ParityCheck(f"epoch mean loss between frameworks{among}",
                                 max(_max_diff(a.epoch_losses, b.epoch_losses) for a in ok for b in ok),
                                 tol.epoch_loss_atol))
        values = [r.metric for r in ok]
        cross.append(ParityCheck(f"{_metric_name(workload)} between frameworks{among}", max(values) - min(values),
                                 _metric_atol(workload, tol)))
    return tuple(cross)


def parity_summary(report: ParityReport) -> ParityResult:
    """What a session keeps of a :class:`ParityReport` (``ResultSet.parity[workload]``): the checks, without the
    notes. Full details stay with ``isobench parity``."""
    return ParityResult(report.workload, report.reference_accuracy, report.frameworks, report.cross)

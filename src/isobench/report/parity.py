"""Text rendering of a parity report."""
from __future__ import annotations

from ..stats import Group


def _check(c, width: int) -> str:
    return (f"    {c.name:<{width}}  max |diff| {c.max_abs_diff:9.2e}  tolerance {c.tolerance:7.1e}  "
            f"{'ok' if c.passed else 'FAIL'}")


def render_parity(report) -> str:
    """One block per framework: every check with its measured max |diff|, tolerance and verdict."""
    ref = f"{report.reference_accuracy:.4f}" if report.metric == "test loss" else f"{report.reference_accuracy:.2%}"
    lines = [f"Parity on {report.workload}: each framework against a float64 numpy reference "
             f"(reference {report.metric} {ref})"]
    width = max([len(c.name) for f in report.frameworks for c in f.checks] + [len(c.name) for c in report.cross]
                + [10])
    for f in report.frameworks:
        name = Group(report.workload, f.framework, f.mode, f.precision, optimizer=f.optimizer).label
        if f.status != "ok":
            lines.append(f"  {name}: {f.status.upper()}: {f.error}")
            continue
        lines.append(f"  {name}: {'PASS' if f.passed else 'FAIL'}")
        lines += [_check(c, width) for c in f.checks]
    if report.cross:
        lines.append("  Across frameworks:")
        lines += [_check(c, width) for c in report.cross]
    lines += [f"  note: {n}" for n in report.notes]
    lines.append(f"Parity {'PASSED' if report.passed else 'FAILED'} for {report.workload}")
    return "\n".join(lines)

"""What ``isobench list`` and ``isobench env`` print: the workloads, the frameworks with their state, and the
environment record, one line each."""
from __future__ import annotations

from typing import Any, Iterable


def render_catalogue(workloads: Iterable, frameworks: Iterable[tuple[Any, str, str]]) -> str:
    """Workloads (name, description) and frameworks as ``(backend, state, remark)``: the state is the installed
    version or how to install it; the remark says why a framework is not compared by default."""
    lines = ["Workloads:"] + [f"  {w.name:<12} {w.description}" for w in workloads]
    lines.append("Frameworks (the first mode is the default; --modes all runs every one):")
    modes = {b.name: ", ".join([*b.modes, *(f"{m} (dp-sgd only)" for m in b.private_modes)]) for b, _, _ in frameworks}
    lines += [f"  {b.name:<17} {b.display:<26} modes: {modes[b.name]:<18} precisions: "
              f"{', '.join(b.precisions):<16} {state}{remark}" for b, state, remark in frameworks]
    return "\n".join(lines)


def render_environment(env: dict[str, Any]) -> str:
    """The environment record as ``key value`` lines; sizes in GiB, nested records as ``k=v`` lists."""
    lines = []
    for key, value in env.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items()) or "(none)"
        elif key.endswith("_bytes") and value:
            key, value = key[:-6], f"{value / 2**30:.1f} GiB"
        lines.append(f"{key:<22} {value}")
    return "\n".join(lines)


def render_deploy_catalogue(runtimes: Iterable[tuple[str, str, str | None]], paths: Iterable[tuple[Any, str | None]]) -> str:
    """``isobench list``'s deployment part: runtimes with their versions, then every path (framework/name),
    its runtime, precisions, batch handling (``DeployPath.batch``), devices and exporter, and why it cannot run here
    where it cannot."""
    lines = ["Deployment runtimes (isobench deploy):"]
    lines += [f"  {name:<17} {display:<26} {version or 'not installed'}" for name, display, version in runtimes]
    lines.append("Deployment paths (--paths; int8 where listed; batch: how the artifact takes the batch sizes it "
                 "serves):")
    lines += [f"  {p.id:<24} {p.runtime:<12} {'/'.join('fp32' if q == 'none' else q for q in p.quantizations):<10} "
              f"{p.batch:<22} {'/'.join(p.devices):<9} {p.exporter}" + (f"  [unavailable: {why}]" if why else "")
              for p, why in paths]
    lines += ["  batch: dynamic = one exported model serves every batch size; static per batch size = one exported",
              "  file per --batch-sizes entry; native = no exported model: the framework builds it from the weights",
              "  when it is loaded for each batch size (a compiled path compiles for that size there)",
              "  cpu/cuda: where it can serve (--device); the runtimes installed here serve on the CPU only"]
    return "\n".join(lines)

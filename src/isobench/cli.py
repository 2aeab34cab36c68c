"""Command line: argument parsing and exit codes only. Exit 0 = all good, 1 = a run or check failed,
2 = bad input (one line on stderr, no traceback), 130 = interrupted."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from . import __version__
from .backends import DEFAULT_FRAMEWORKS, REGISTRY, get_backend, installed_frameworks, is_installed
from .errors import UserError
from .measure import default_threads, host_environment
from .results import ResultSet

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of usage + message
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
    return value


def _display() -> dict[str, str]:
    return {name: get_backend(name).display for name in REGISTRY}


def resolve_frameworks(text: str | None) -> tuple[list[str], list[str]]:
    """Framework ids from a comma-separated list (validated), or the installed defaults.

    Returns ``(frameworks, notes)``; notes name default frameworks that are missing and how to add them."""
    if text:
        names = [get_backend(n.strip()).name for n in text.split(",") if n.strip()]
        if not names:
            raise UserError("--frameworks is empty; give a comma-separated list such as torch,tensorflow,jax")
        return list(dict.fromkeys(names)), []
    names = installed_frameworks()
    notes = [f"{get_backend(n).display} is not installed and is left out; add it with: {get_backend(n).install_hint}"
             for n in DEFAULT_FRAMEWORKS if n not in names]
    if not names:
        raise UserError("no framework is installed; install them with: pip install -c constraints.txt '.[all]'")
    return names, notes


def _threads(value: int | None) -> int:
    available = default_threads()
    if value is None:
        return available
    if value > available:
        raise UserError(f"--threads {value} exceeds the {available} CPUs this process may use")
    return value


def cmd_run(args) -> int:
    from .report import render_failures, render_table, render_verdict
    from .report.progress import Progress
    from .runner import RunConfig, iter_runs, new_result_set
    from .stats import summarize
    from .workloads import get_workload

    workloads = [get_workload(w).name for w in args.workloads or ["seed-mlp"]]
    frameworks, notes = resolve_frameworks(args.frameworks)
    json_path = Path(args.json) if args.json else None
    if json_path and not json_path.parent.exists():
        raise UserError(f"--json: directory {json_path.parent} does not exist")
    config = RunConfig(workloads=workloads, frameworks=frameworks, repeats=args.repeats,
                       threads=_threads(args.threads), timeout_s=args.timeout, seed=args.seed)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    total = len(workloads) * len(frameworks) * args.repeats
    print(f"isobench {__version__}: {', '.join(workloads)} | "
          f"{', '.join(f'{f}/{m}' for f, m in config.cells())} | {args.repeats} repeats, {config.threads} threads, "
          f"{total} worker processes in interleaved order (seed {args.seed})", file=sys.stderr)
    results = new_result_set(config)
    display = _display()
    progress = Progress(total, display)
    interrupted = False
    try:
        for record in iter_runs(config, on_event=progress.on_event):
            results.runs.append(record)
            progress.on_record(record)
            if json_path:  # rewritten after every run: an interruption loses nothing already measured
                _write_json(results, json_path)
    except KeyboardInterrupt:
        interrupted = True
        print(f"\ninterrupted: {len(results.runs)} of {total} runs finished and kept", file=sys.stderr)
    progress.finish()
    for summary in summarize(results.runs, display=display):
        print()
        print(render_table(summary))
        print()
        print("\n".join(render_verdict(summary)))
    failures = render_failures(results.runs, display=display)
    if failures:
        print()
        print(failures)
    if json_path:
        _write_json(results, json_path)
        print(f"\nAll run records written to {json_path}", file=sys.stderr)
    if interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK if all(r.ok for r in results.runs) else EXIT_FAILED


def _write_json(results: ResultSet, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        results.write_json(tmp)
        os.replace(tmp, path)
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror}") from None


def cmd_parity(args) -> int:
    from .report.parity import render_parity
    from .report.progress import Progress
    from .runner.parity import run_parity
    from .workloads import get_workload, list_workloads

    workloads = [get_workload(w).name for w in args.workloads] or [w.name for w in list_workloads()]
    frameworks, notes = resolve_frameworks(args.frameworks)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    missing = [f for f in frameworks if not is_installed(get_backend(f))]
    if missing:
        raise UserError(f"not installed: {', '.join(missing)}; install with: {get_backend(missing[0]).install_hint}")
    cells = [(f, get_backend(f).modes[0]) for f in frameworks]
    passed = True
    for w in workloads:
        progress = Progress(len(cells), _display())
        report = run_parity(w, cells, _threads(args.threads), args.timeout, on_event=progress.on_event)
        progress.clear()
        print(render_parity(report, _display()))
        passed &= report.passed
    return EXIT_OK if passed else EXIT_FAILED


def cmd_list(args) -> int:
    from .workloads import list_workloads

    print("Workloads:")
    for w in list_workloads():
        print(f"  {w.name:<12} {w.description}")
    print("Frameworks:")
    for name in REGISTRY:
        b = get_backend(name)
        state = f"{b.version() or '?'}" if is_installed(b) else f"not installed ({b.install_hint})"
        extra = "  (reference, not compared by default)" if name not in DEFAULT_FRAMEWORKS else ""
        print(f"  {name:<12} {b.display:<26} modes: {', '.join(b.modes):<10} {state}{extra}")
    return EXIT_OK


def cmd_env(args) -> int:
    env = host_environment()
    if args.json:
        print(json.dumps(env, indent=1))
        return EXIT_OK
    for key, value in env.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items()) or "(none)"
        elif key.endswith("_bytes") and value:
            key, value = key[:-6], f"{value / 2**30:.1f} GiB"
        print(f"{key:<22} {value}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="isobench", description="Train the same workload in PyTorch, TensorFlow and JAX, each in "
                "fresh processes, and compare training time, accuracy and memory with confidence intervals.")
    p.add_argument("--version", action="version", version=f"isobench {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def frameworks_arg(sp):
        sp.add_argument("--frameworks", metavar="LIST",
                        help="comma-separated frameworks to compare: torch, tensorflow, jax (also numpy, the float64 "
                             "reference); default: every one of torch, tensorflow, jax that is installed")
        sp.add_argument("--threads", type=_positive_int, metavar="N",
                        help="CPU cores each worker is pinned to (affinity) and its thread pools' size; "
                             "default: all cores this process may use")
        sp.add_argument("--timeout", type=_positive_float, default=600.0, metavar="SECONDS",
                        help="kill a worker that runs longer than this and record it as 'timeout' (default 600)")

    r = sub.add_parser("run", help="measure workloads in every framework and print the comparison",
                       description="Run every (workload, framework) cell --repeats times, each in a fresh worker "
                       "process, in a seeded interleaved order; then print the table and verdict.")
    r.add_argument("workloads", nargs="*", metavar="WORKLOAD", help="built-in workload names (default: seed-mlp)")
    frameworks_arg(r)
    r.add_argument("--repeats", type=_positive_int, default=5, metavar="N",
                   help="worker processes per framework and workload; the process is the unit of replication "
                        "(default 5)")
    r.add_argument("--seed", type=int, default=0, help="seed of the interleaved run order (default 0)")
    r.add_argument("--json", metavar="PATH", help="write every run record (schema in README) to this file, "
                                                  "rewritten after each run")
    r.set_defaults(func=cmd_run)

    pa = sub.add_parser("parity", help="prove the frameworks do identical work (exit 1 if not)",
                        description="Train each workload once per framework from identical weights, data and order "
                        "and compare initial logits, step-0 gradients, per-step and per-epoch losses and test "
                        "accuracy with a float64 numpy reference, against tolerances stated per workload.")
    pa.add_argument("workloads", nargs="*", metavar="WORKLOAD", help="workloads to check (default: all built-in)")
    frameworks_arg(pa)
    pa.set_defaults(func=cmd_parity)

    ls = sub.add_parser("list", help="list workloads and frameworks with installed versions")
    ls.set_defaults(func=cmd_list)
    en = sub.add_parser("env", help="print the environment record of this machine")
    en.add_argument("--json", action="store_true", help="print it as JSON")
    en.set_defaults(func=cmd_env)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return args.func(args)
    except UserError as e:
        print(f"isobench: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("isobench: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED

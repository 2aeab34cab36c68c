"""Command line: argument parsing and exit codes only. Exit 0 = all good, 1 = a run or check failed,
2 = bad input (one line on stderr, no traceback), 130 = interrupted."""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Callable

from . import __version__
from .backends import DEFAULT_FRAMEWORKS, REGISTRY, get_backend, installed_frameworks, is_installed
from .errors import UserError
from .measure import default_threads, host_environment
from .results import ResultSet

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
DEFAULT_TIMEOUT_S = 600.0


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


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction such as 0.05, got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (0.05 means ±5%), got {text}")
    return value


def resolve_modes(text: str | None, frameworks: list[str]) -> tuple[dict[str, list[str]], list[str]]:
    """``--modes`` -> (framework -> its modes, notes). ``all``: every mode of every framework; ``default`` (or
    nothing): each framework's default; else a comma-separated list of MODE (every chosen framework that has
    it) or FRAMEWORK=MODE items. A framework that none of the items names runs its default mode (noted)."""
    if not text or text.strip() == "default":
        return {}, []
    backends = {f: get_backend(f) for f in frameworks}
    if text.strip() == "all":
        return {f: list(b.modes) for f, b in backends.items()}, []
    chosen: dict[str, list[str]] = {}
    for item in filter(None, (x.strip() for x in text.split(","))):
        if "=" in item:
            fw, mode = (x.strip() for x in item.split("=", 1))
            fw = get_backend(fw).name
            if fw not in backends:
                raise UserError(f"--modes {item}: {fw} is not among the compared frameworks ({', '.join(frameworks)})")
            if mode not in backends[fw].modes:
                raise UserError(f"--modes {item}: {backends[fw].display} has no mode {mode!r}; "
                                f"it has: {', '.join(backends[fw].modes)}")
            targets = [fw]
        else:
            mode, targets = item, [f for f, b in backends.items() if item in b.modes]
            if not targets:
                known = sorted({m for b in backends.values() for m in b.modes})
                raise UserError(f"--modes: no compared framework has a mode {item!r}; modes: {', '.join(known)}, all")
        for fw in targets:
            chosen.setdefault(fw, [])
            if mode not in chosen[fw]:
                chosen[fw].append(mode)
    notes = [f"--modes names no mode of {backends[f].display}; it runs its default mode {backends[f].modes[0]}"
             for f in frameworks if f not in chosen]
    return chosen, notes


def resolve_precisions(text: str | None) -> list[str]:
    """``--precision fp32,bf16`` (or ``all``) -> validated list."""
    from .backends.base import PRECISIONS

    if not text:
        return ["fp32"]
    if text.strip() == "all":
        return list(PRECISIONS)
    names = list(dict.fromkeys(x.strip().lower() for x in text.split(",") if x.strip()))
    for n in names:
        if n not in PRECISIONS:
            raise UserError(f"unknown precision {n!r}; choose from: {', '.join(PRECISIONS)}, all")
    if not names:
        raise UserError("--precision is empty; give fp32, bf16, fp16 or a comma-separated list")
    return names


def _memory_size(text: str) -> int:
    """``--max-memory 4G`` / ``512M`` / bytes -> bytes."""
    units = {"k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
    t = text.strip().lower().removesuffix("ib").removesuffix("b")
    try:
        value = float(t[:-1]) * units[t[-1]] if t and t[-1] in units else float(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a size such as 4G or 512M, got {text!r}") from None
    if not value >= 2**20:
        raise argparse.ArgumentTypeError(f"must be at least 1M, got {text!r}")
    return int(value)


def _data_dir(value: str | None) -> str | None:
    if value and not Path(value).is_dir():
        raise UserError(f"--data-dir {value} is not a folder")
    return value


def _threads(value: int | None) -> int:
    available = default_threads()
    if value is None:
        return available
    if value > available:
        raise UserError(f"--threads {value} exceeds the {available} CPUs this process may use")
    return value


def _interrupt_on_sigterm() -> Callable[[], None]:
    """Make SIGTERM behave like Ctrl-C (KeyboardInterrupt: finished runs kept, exit 130); returns the undo."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    return lambda: signal.signal(signal.SIGTERM, signal.SIG_DFL if old is None else old)


def _check_parity(results: ResultSet, config, store, display: dict[str, str]) -> None:
    """Parity of every workload on the installed chosen frameworks, one line each on stderr, kept in the session."""
    from .report.progress import Progress
    from .report.sessions import parity_line
    from .runner import parity_summary
    from .runner.parity import run_parity

    cells = [c for c in config.cells() if is_installed(get_backend(c[0]))]
    if not cells:
        return
    for w in config.workloads:
        progress = Progress(len(cells), display)
        report = run_parity(w, cells, config.threads, config.timeout_s, on_event=progress.on_event,
                            data_dir=config.data_dir, device=config.device,
                            gpu=config.gpus[0] if config.gpus else None)
        progress.clear()
        results.parity[report.workload] = parity_summary(report)  # keyed by name, as the runs are
        print(parity_line(results.parity[report.workload], display), file=sys.stderr)
    if store:
        store.set_parity(results.session_id, results.parity)


def _adaptive_outcome(runs, config) -> str:
    p, target = runs.precision, f"±{100 * config.target_width:g}%"
    if p.confident:
        return (f"Confident after {runs.repeats} repeats: every training-time and steady-step-time interval is "
                f"within {target} (widest ±{100 * p.width:.1f}%, {p.where})")
    why = p.too_few or f"widest interval ±{100 * p.width:.1f}% ({p.where})"
    return f"Stopped at --max-repeats {config.max_repeats} without reaching {target}: {why}"


def _run_config(args):
    """The validated :class:`~isobench.runner.RunConfig` of ``isobench run`` and the notes to print."""
    from .data import load_dataset
    from .runner import RunConfig, resolve_workloads
    from .runner.devices import parse_gpus, resolve_device

    workloads = args.workloads or ["seed-mlp"]
    frameworks, notes = resolve_frameworks(args.frameworks)
    if not args.until_confident and (args.target_width is not None or args.max_repeats is not None):
        raise UserError("--target-width and --max-repeats apply only with --until-confident")
    if args.no_store and args.db:
        raise UserError("--db and --no-store exclude each other")
    modes, mode_notes = resolve_modes(args.modes, frameworks)
    if args.executor == "ray":  # the cluster's nodes have the GPUs, not necessarily this machine: Ray places them
        from .runner.ray_executor import import_ray

        import_ray()  # a missing Ray stops us before a session is recorded
        if args.gpus:
            raise UserError("--gpus applies to the local executor; with --executor ray each cuda cell takes one "
                            "GPU that Ray chooses")
        if args.device == "auto":
            raise UserError("--device auto cannot see a cluster's GPUs; give --device cpu or cuda with --executor ray")
        device, gpus = args.device, []
    else:
        if args.ray_address:
            raise UserError("--ray-address applies only with --executor ray")
        device, gpus = resolve_device(args.device, parse_gpus(args.gpus) if args.gpus else None)
    config = RunConfig(workloads=workloads, frameworks=frameworks, repeats=5 if args.repeats is None else args.repeats,
                       threads=_threads(args.threads), timeout_s=args.timeout or DEFAULT_TIMEOUT_S, seed=args.seed or 0,
                       seeds=args.seeds or 1,
                       data_dir=_data_dir(args.data_dir), scale=args.scale, modes=modes,
                       precisions=resolve_precisions(args.precision), device=device, gpus=gpus,
                       max_memory_bytes=args.max_memory, executor=args.executor, ray_address=args.ray_address)
    notes += mode_notes + config.skipped()
    if config.seeds > config.repeats:
        raise UserError(f"--seeds {config.seeds} needs --repeats {config.seeds} or more (repeat r trains from seed s + "
                        f"r mod {config.seeds}), so that every seed is measured")
    if config.repeats % config.seeds:
        extra = config.repeats % config.seeds
        notes.append(f"--repeats {config.repeats} is not a multiple of --seeds {config.seeds}: "
                     + ("seed s gets" if extra == 1 else f"seeds s to s + {extra - 1} get")
                     + " one repeat more than the others")
    if not config.cells():
        raise UserError("no framework implements the chosen precision(s); see 'isobench list'")
    for w in resolve_workloads(config).values():  # every workload file and data set validated before any worker
        load_dataset(w, config.data_dir)         # starts and before the session is recorded
    if args.until_confident:
        config.target_width, config.max_repeats = args.target_width or 0.05, args.max_repeats or 20
        if config.max_repeats < config.repeats:
            raise UserError(f"--max-repeats {config.max_repeats} is below --repeats {config.repeats}")
    return config, notes


RESUME_CONFLICTS = ("workloads", "frameworks", "modes", "precision", "repeats", "seed", "seeds", "threads", "data_dir",
                    "scale", "until_confident", "target_width", "max_repeats", "no_store", "gpus")


def _resume(args, store):
    """(config, results, plan specs already measured) of ``--resume SESSION``: its stored configuration and runs."""
    from .runner import RunConfig

    given = [f"--{n.replace('_', '-')}" for n in RESUME_CONFLICTS if getattr(args, n, None) not in (None, False, [])]
    if given:
        raise UserError(f"--resume reruns the stored plan of the session; drop {', '.join(given)}")
    if store is None:
        raise UserError("--resume needs the results database; drop --no-store")
    session_id = store.resolve(args.resume)
    results = store.load(session_id)
    config = RunConfig.from_dict(results.config)
    config.executor, config.ray_address = args.executor, args.ray_address
    if args.timeout:
        config.timeout_s = args.timeout
    if args.max_memory:
        config.max_memory_bytes = args.max_memory
    if config.target_width is not None:
        raise UserError(f"session {session_id} used --until-confident, whose plan depends on its results; "
                        "it cannot be resumed: run it again")
    return config, results, {r.spec for r in results.runs if not r.lost}  # a cell the executor lost runs again


def cmd_run(args) -> int:
    from .report.progress import Progress
    from .report.sessions import render_results
    from .runner import iter_runs, make_plan, new_result_set, resolve_workloads
    from .runner.adaptive import AdaptiveRuns
    from .runner.local import kill_running
    from .store import open_store
    from .store.db import FAILED, FINISHED, INTERRUPTED

    json_path = Path(args.json) if args.json else None
    if json_path and not json_path.parent.exists():
        raise UserError(f"--json: directory {json_path.parent} does not exist")
    if args.resume:
        store = open_store(args.db, create=False)
        try:
            config, results, done = _resume(args, store)
        except BaseException:
            store.close()
            raise
        notes = []
    else:
        config, notes = _run_config(args)
        store = None if args.no_store else open_store(args.db, create=True)  # a bad database stops us before any worker
        results, done = new_result_set(config), set()
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    lost = {r.spec: r for r in results.runs if r.lost}  # --resume: cells the executor lost, to run and replace
    adaptive = config.target_width is not None
    workloads = resolve_workloads(config)
    plan = make_plan(list(workloads), config.cells(), config.repeats, config.threads, config.seed, config.device)
    total = len(workloads) * len(config.cells()) * (config.max_repeats if adaptive else config.repeats)
    todo = total - len(done & set(plan))
    repeats = (f"{config.repeats} to {config.max_repeats} repeats until every interval is within "
               f"±{100 * config.target_width:g}%" if adaptive else f"{config.repeats} repeats")
    cells = ", ".join(f"{f}/{m}" + (f"/{p}" if p != "fp32" else "") for f, m, p in config.cells())
    where = config.device + (f" (GPUs {', '.join(map(str, config.gpus))})" if config.device == "cuda" else "")
    print(f"isobench {__version__}: {', '.join(workloads)} | {cells} | {repeats}, {config.threads} threads on {where}, "
          f"{'up to ' if adaptive else ''}{todo} worker processes in interleaved order (seed {config.seed})"
          + (f"; weights and orders from {config.seeds} seeds (repeat r: seed s + r mod {config.seeds})"
             if config.seeds > 1 else "")
          + (f"; resuming session {results.session_id}: {total - todo} of {total} runs already measured"
             + (f", {len(lost)} lost by the executor run again" if lost else "")
             if args.resume else "") + (f"; executor {config.executor}" if config.executor != "local" else ""),
          file=sys.stderr)
    display = _display()
    status, progress, measured = FAILED, None, 0  # FAILED: isobench itself raised
    restore_sigterm = _interrupt_on_sigterm()
    try:
        if store and args.resume:
            store.reopen_session(results.session_id)
        elif store:
            store.create_session(results)
        if not args.no_parity and not results.parity:
            _check_parity(results, config, store, display)
        progress = Progress(todo, display)
        if adaptive:
            runs = AdaptiveRuns(config, progress.on_event, display)
        else:
            runs = iter_runs(config, progress.on_event, plan=plan, skip=done,
                             first_order=max((r.order for r in results.runs), default=-1) + 1)
        for record in runs:
            measured += 1
            if replaced := lost.pop(record.spec, None):
                record.environment["replaces"] = f"{replaced.status} record: {replaced.error}"
                results.runs.remove(replaced)
            results.runs.append(record)
            if store and replaced:
                store.replace_run(results.session_id, record)
            elif store:  # one transaction per run: an interruption loses nothing already measured
                store.add_run(results.session_id, record)
            progress.on_record(record)
            if json_path:  # rewritten after every run, for the same reason
                _write_json(results, json_path)
        status = FINISHED
    except KeyboardInterrupt:
        status = INTERRUPTED
        print(f"\ninterrupted: {measured} of {todo} runs finished and kept"
              + (f"; continue with: isobench run --resume {results.session_id}"
                 + (f" --db {store.path}" if args.db else "") if store else ""), file=sys.stderr)
    finally:
        kill_running()  # a worker started just before an interruption reached its own clean-up
        restore_sigterm()
        if store and results.session_id is not None:
            store.finish_session(results.session_id, status)
    if progress:
        progress.finish()
    if adaptive and status == FINISHED:
        print(_adaptive_outcome(runs, config), file=sys.stderr)
    print()
    print(render_results(results, display))
    if json_path:
        _write_json(results, json_path)
        print(f"\nAll run records written to {json_path}", file=sys.stderr)
    if store:
        print(f"Session {results.session_id} stored in {store.path} (isobench show {results.session_id}; "
              "isobench history)", file=sys.stderr)
        store.close()
    if status == INTERRUPTED:
        return EXIT_INTERRUPTED
    return EXIT_OK if all(r.ok for r in results.runs) else EXIT_FAILED


def _write_json(results: ResultSet, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        results.write_json(tmp)
        os.replace(tmp, path)
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror}") from None


def _load(args, session: str | None):
    """(ResultSet, status) of SESSION (default: the latest) from the database of --db."""
    from .store import open_store

    with open_store(args.db) as store:
        session_id = store.resolve(session)
        return store.load(session_id), store.status(session_id)


def _output_path(text: str | None, flag: str) -> Path | None:
    path = Path(text) if text else None
    if path and not path.parent.is_dir():
        raise UserError(f"{flag}: directory {path.parent} does not exist")
    return path


def cmd_history(args) -> int:
    from .report.sessions import render_history
    from .store import open_store

    with open_store(args.db) as store:
        sessions = store.sessions()
        print(render_history(sessions) if sessions else f"No sessions in {store.path} yet; 'isobench run' records one")
    return EXIT_OK


def cmd_show(args) -> int:
    from .report.sessions import describe_session, parity_line, render_results

    results, status = _load(args, args.session)
    display = _display()
    print("\n".join([describe_session(results, status)]
                    + [parity_line(p, display) for p in results.parity.values()]))
    print()
    print(render_results(results, display) if results.runs else "No finished runs in this session")
    return EXIT_OK


def cmd_export(args) -> int:
    import io

    from .store.export import write_csv

    path = _output_path(args.output, "--output")
    results, _ = _load(args, args.session)
    if args.format == "json":  # byte for byte the document of 'isobench run --json'
        text = json.dumps(results.to_dict(), indent=1, allow_nan=False) + "\n"
    else:
        write_csv(results, buffer := io.StringIO())
        text = buffer.getvalue()
    if not path:
        sys.stdout.write(text)
        return EXIT_OK
    try:
        path.write_text(text)
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror}") from None
    print(f"Session {results.session_id}: {len(results.runs)} runs written to {path}", file=sys.stderr)
    return EXIT_OK


def cmd_compare(args) -> int:
    from .report.sessions import render_comparison
    from .store import open_store
    from .store.compare import compare_sessions, setup_differences

    with open_store(args.db) as store:
        ids = store.resolve(args.session_a), store.resolve(args.session_b)
        if ids[0] == ids[1]:
            raise UserError(f"both sessions are {ids[0]}; give two different sessions (see 'isobench history')")
        a, b = store.load(ids[0]), store.load(ids[1])
    groups = compare_sessions(a, b, _display())
    if not groups:
        raise UserError(f"sessions {ids[0]} and {ids[1]} have no (workload, framework, mode) in common")
    print(render_comparison(a, b, groups, setup_differences(a, b)))
    return EXIT_OK


def cmd_report(args) -> int:
    if not (args.html or args.markdown):
        raise UserError("give --html PATH and/or --markdown PATH")
    html, markdown = _output_path(args.html, "--html"), _output_path(args.markdown, "--markdown")
    results, _ = _load(args, args.session)
    if html:
        from .report.html import write_html
        write_html(results, html)
        print(f"HTML report of session {results.session_id} written to {html} ({html.stat().st_size:,} bytes)",
              file=sys.stderr)
    if markdown:
        from .report.markdown import write_markdown
        written = write_markdown(results, markdown)
        print(f"Markdown report of session {results.session_id} written to {written[0]}"
              + (f" with {len(written) - 1} plots in {written[1].parent}" if len(written) > 1 else ""), file=sys.stderr)
    return EXIT_OK


def cmd_parity(args) -> int:
    from .report.parity import render_parity
    from .report.progress import Progress
    from .runner.inputs import resolve_workload
    from .runner.parity import run_parity
    from .workloads import list_workloads

    workloads = args.workloads or [w.name for w in list_workloads()]
    data_dir = _data_dir(args.data_dir)
    for w in workloads:
        resolve_workload(w, data_dir)  # every workload file validated before any worker starts
    frameworks, notes = resolve_frameworks(args.frameworks)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    missing = [f for f in frameworks if not is_installed(get_backend(f))]
    if missing:
        raise UserError(f"not installed: {', '.join(missing)}; install with: {get_backend(missing[0]).install_hint}")
    from .runner import RunConfig
    from .runner.devices import resolve_device

    modes, mode_notes = resolve_modes(args.modes, frameworks)
    device, gpus = resolve_device(args.device, None)
    config = RunConfig(workloads, frameworks, modes=modes, precisions=resolve_precisions(args.precision))
    for note in mode_notes + config.skipped():
        print(f"note: {note}", file=sys.stderr)
    cells = config.cells()
    if not cells:
        raise UserError("no framework implements the chosen precision(s); see 'isobench list'")
    passed = True
    for w in workloads:
        progress = Progress(len(cells), _display())
        report = run_parity(w, cells, _threads(args.threads), args.timeout or DEFAULT_TIMEOUT_S, on_event=progress.on_event,
                            data_dir=data_dir, device=device, gpu=gpus[0] if gpus else None)
        progress.clear()
        print(render_parity(report, _display()))
        passed &= report.passed
    return EXIT_OK if passed else EXIT_FAILED


def cmd_list(args) -> int:
    from .workloads import list_workloads

    print("Workloads:")
    for w in list_workloads():
        print(f"  {w.name:<12} {w.description}")
    print("Frameworks (the first mode is the default; --modes all runs every one):")
    for name in REGISTRY:
        b = get_backend(name)
        state = f"{b.version() or '?'}" if is_installed(b) else f"not installed ({b.install_hint})"
        extra = "" if name in DEFAULT_FRAMEWORKS else \
            "  (float64 reference, for parity)" if name == "numpy" else "  (not compared by default: --frameworks)"
        print(f"  {name:<17} {b.display:<26} modes: {', '.join(b.modes):<18} precisions: "
              f"{', '.join(b.precisions):<16} {state}{extra}")
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
                        help="comma-separated frameworks to compare: torch, tensorflow, jax, keras-torch, "
                             "keras-tensorflow, keras-jax (also numpy, the float64 reference); default: every one of "
                             "torch, tensorflow, jax that is installed")
        sp.add_argument("--threads", type=_positive_int, metavar="N",
                        help="CPU cores each worker is pinned to (affinity) and its thread pools' size; "
                             "default: all cores this process may use")
        sp.add_argument("--timeout", type=_positive_float, metavar="SECONDS",
                        help="kill a worker that runs longer than this and record it as 'timeout' (default 600)")

    def axes_args(sp):
        sp.add_argument("--modes", metavar="LIST",
                        help="execution modes to compare: 'all' (every mode of every framework), 'default' (each "
                             "framework's first mode; the default), or a comma-separated list of MODE (every framework "
                             "that has it) and FRAMEWORK=MODE items, e.g. eager,compile or torch=compile,tensorflow=xla. "
                             "Modes: torch eager|compile, tensorflow graph|eager|xla, jax jit|eager, keras-* fit "
                             "(see 'isobench list')")
        sp.add_argument("--precision", metavar="LIST",
                        help="fp32 (default: float32 with TF32 off in every framework), bf16 or fp16 (each framework's "
                             "own mixed precision: float32 weights, low-precision compute, fp16 with loss scaling), a "
                             "comma-separated list, or all")
        sp.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu",
                        help="where workers train: cpu (default; GPUs hidden from every framework), cuda (one GPU per "
                             "worker, allocator peak reported as device memory) or auto (cuda if nvidia-smi lists a GPU)")

    def data_args(sp, scale=True):
        sp.add_argument("--data-dir", metavar="DIR",
                        help="folder with real data files: MNIST/Fashion-MNIST IDX files (lenet5) or the CIFAR-10 "
                             "python batches (resnet-mini); nothing is downloaded")
        if scale:
            sp.add_argument("--scale", type=_positive_float, metavar="F",
                            help="multiply the size of synthetic data sets (resnet-mini, gpt-tiny) by F")

    def db_arg(sp):
        sp.add_argument("--db", metavar="PATH", help="results database (SQLite); default: $ISOBENCH_DB if set, "
                                                     "else ./isobench-results/isobench.db")

    def session_arg(sp):
        sp.add_argument("session", metavar="SESSION", nargs="?",
                        help="session id, see 'isobench history' (default: the latest)")

    r = sub.add_parser("run", help="measure workloads in every framework and print the comparison",
                       description="Run every (workload, framework) cell --repeats times, each in a fresh worker "
                       "process, in a seeded interleaved order; then print the table and verdict.")
    r.add_argument("workloads", nargs="*", metavar="WORKLOAD",
                   help="built-in workload names or TOML workload files (default: seed-mlp); see docs/workloads.md")
    frameworks_arg(r)
    axes_args(r)
    r.add_argument("--gpus", metavar="LIST",
                   help="with --device cuda: GPU indices such as 0,1; independent cells run in parallel, one worker per "
                        "GPU (default: GPU 0 only, one worker at a time)")
    r.add_argument("--max-memory", type=_memory_size, metavar="SIZE",
                   help="kill a worker whose resident memory (worker and its children, polled every 0.1 s) exceeds SIZE "
                        "(e.g. 4G, 512M) and record it as 'out_of_memory' with the peak seen; default: no cap")
    r.add_argument("--resume", metavar="SESSION",
                   help="continue a stored session (e.g. one interrupted by Ctrl-C): run only the cells of its plan "
                        "that have no record yet (or were lost with a Ray node), with its stored configuration, and add "
                        "them to it")
    r.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="where worker processes run: local (default: this machine) or ray (Ray tasks on a cluster, "
                        "each launching the same fresh worker process; needs pip install 'isobench[ray]')")
    r.add_argument("--ray-address", metavar="ADDRESS",
                   help="with --executor ray: the cluster to join, e.g. ray://head:10001 or head:6379 (default: "
                        "$RAY_ADDRESS, else a local Ray instance started for this run)")
    data_args(r)
    r.add_argument("--repeats", type=_positive_int, metavar="N",
                   help="worker processes per framework and workload; the process is the unit of replication "
                        "(default 5)")
    r.add_argument("--seed", type=int, help="seed of the interleaved run order (default 0)")
    r.add_argument("--seeds", type=_positive_int, metavar="N",
                   help="train repeat r of every framework from seed s + (r mod N), s the workload's seed: N sets of "
                        "initial weights, epoch orders and dropout, the same N for every framework, on the same data "
                        "split. Test accuracy then varies between repeats and can be compared; with the default 1 "
                        "every repeat is the identical, deterministic training (no accuracy claim). Needs --repeats "
                        ">= N")
    r.add_argument("--json", metavar="PATH", help="write every run record (schema in README) to this file, "
                                                  "rewritten after each run")
    db_arg(r)
    r.add_argument("--no-store", action="store_true", help="do not record this session in the results database")
    r.add_argument("--no-parity", action="store_true",
                   help="skip the parity check (one worker per framework and workload, before measuring) that "
                        "proves the frameworks do identical work")
    r.add_argument("--until-confident", action="store_true",
                   help="after --repeats, add interleaved repeats of every cell until each framework's training-time "
                        "and steady-step-time ratio to the best has a 95%% interval within --target-width, or "
                        "--max-repeats is reached")
    r.add_argument("--target-width", type=_fraction, metavar="FRACTION",
                   help="with --until-confident: the interval's half-width as a fraction of the ratio "
                        "(default 0.05, i.e. ±5%%)")
    r.add_argument("--max-repeats", type=_positive_int, metavar="N",
                   help="with --until-confident: stop after this many repeats even if not confident (default 20)")
    r.set_defaults(func=cmd_run)

    hi = sub.add_parser("history", help="list the sessions in the results database",
                        description="One line per recorded session: id, date, workloads, frameworks, runs ok/failed, "
                        "parity result and status (running, finished, interrupted, failed).")
    db_arg(hi)
    hi.set_defaults(func=cmd_history)
    sh = sub.add_parser("show", help="print a stored session's table and verdict again, without rerunning",
                        description="Re-render the results table, verdict, parity result and failures of a stored "
                        "session from the results database.")
    session_arg(sh)
    db_arg(sh)
    sh.set_defaults(func=cmd_show)
    ex = sub.add_parser("export", help="write a stored session as JSON or tidy CSV",
                        description="Write a stored session: json is the same document as 'isobench run --json'; csv "
                        "is tidy, one row per worker process with its spec, status and every scalar metric (seconds, "
                        "bytes, samples/s, accuracy as a fraction), readable with pandas.read_csv.")
    session_arg(ex)
    ex.add_argument("--format", choices=("json", "csv"), default="json", help="output format (default json)")
    ex.add_argument("--output", metavar="PATH", help="write to this file instead of standard output")
    db_arg(ex)
    ex.set_defaults(func=cmd_export)
    co = sub.add_parser("compare", help="compare two stored sessions metric by metric, flagging regressions",
                        description="For every (workload, framework, mode) in both sessions: per metric (training "
                        "time, steady step time, first step, test accuracy, training-peak RSS) the ratio B/A of "
                        "medians with a bootstrap 95%% interval, the Mann-Whitney p and a flag: regression or "
                        "improvement when the interval excludes 1 and p < 0.05, else no significant change.")
    co.add_argument("session_a", metavar="SESSION_A", help="the baseline session id (see 'isobench history')")
    co.add_argument("session_b", metavar="SESSION_B", nargs="?",
                    help="the session compared with it (default: the latest)")
    db_arg(co)
    co.set_defaults(func=cmd_compare)
    rp = sub.add_parser("report", help="write a stored session as an HTML page and/or a Markdown article",
                        description="Write the report of a stored session: a self-contained HTML file with inline "
                        "plots, and/or a Markdown article with PNG plots beside it.")
    session_arg(rp)
    rp.add_argument("--html", metavar="PATH", help="write a self-contained HTML report (works offline)")
    rp.add_argument("--markdown", metavar="PATH", help="write a Markdown report, its PNG plots beside it")
    db_arg(rp)
    rp.set_defaults(func=cmd_report)

    pa = sub.add_parser("parity", help="prove the frameworks do identical work (exit 1 if not)",
                        description="Train each workload once per framework from identical weights, data and order "
                        "and compare initial logits, step-0 gradients, per-step and per-epoch losses and test "
                        "accuracy with a float64 numpy reference, against tolerances stated per workload.")
    pa.add_argument("workloads", nargs="*", metavar="WORKLOAD",
                    help="built-in workload names or TOML workload files (default: all built-in)")
    frameworks_arg(pa)
    axes_args(pa)
    data_args(pa, scale=False)
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
    except BrokenPipeError:  # output piped into a reader that stopped early (isobench export | head)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return EXIT_FAILED

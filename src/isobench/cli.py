"""Command line: parse the arguments, call the function behind the command, map errors to exit codes. Exit 0 = all
good, 1 = a run or check failed, 2 = bad input (one line on stderr, no traceback), 130 = interrupted."""
from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .backends import DEFAULT_FRAMEWORKS, REGISTRY, get_backend, is_installed
from .cli_args import EXIT_USAGE, build_parser
from .config import (TIMEOUT_S, RunChoices, RunConfig, check_precision_device, resolve_data_dir, resolve_device,
                     resolve_frameworks, resolve_modes, resolve_optimizers, resolve_precisions, resolve_run,
                     resolve_threads, runs_mode)
from .errors import UserError
from .measure import host_environment

EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130
# flags that would change the stored plan of a session that --resume continues
RESUME_CONFLICTS = ("workloads", "frameworks", "modes", "precision", "optimizer", "repeats", "warmup", "seed", "seeds",
                    "threads", "data_dir", "scale", "until_confident", "target_width", "max_repeats", "no_store", "gpus",
                    "no_counterpart", "paths", "batch_sizes", "quantize", "calls", "trained_by", "keep_artifacts")


@dataclass(frozen=True)
class Measuring:
    """A command that runs a session of one kind: how its choices become a config, how a stored one reads back."""
    kind: str             # results.TRAINING or results.DEPLOYMENT
    choices: type         # RunChoices, DeployChoices
    resolve: Callable     # choices -> (config, notes)
    config: type          # RunConfig, DeployConfig (its from_dict and resumed)


def _measuring(command: str) -> Measuring:
    from .config import DeployChoices, DeployConfig, resolve_deploy
    from .results import DEPLOYMENT, TRAINING

    return {"run": Measuring(TRAINING, RunChoices, resolve_run, RunConfig),
            "deploy": Measuring(DEPLOYMENT, DeployChoices, lambda c: (resolve_deploy(c), []), DeployConfig)}[command]


def _resume(args, store, m: Measuring):
    """(config, stored results) of ``--resume SESSION``: its stored configuration and records; a session of another
    kind is refused with the command that continues it."""
    from .runner.session import check_resumable, kind_of_name

    given = [f"--{n.replace('_', '-')}" for n in RESUME_CONFLICTS if getattr(args, n, None) not in (None, False, [])]
    if given:
        raise UserError(f"--resume reruns the stored plan of the session; drop {', '.join(given)}")
    if store is None:
        raise UserError("--resume needs the results database; drop --no-store")
    session_id = store.resolve(args.resume)
    results = store.load(session_id)
    check_resumable(results, kind_of_name(m.kind), session_id)
    config = m.config.from_dict(results.config).resumed(session_id, args.executor, args.ray_address, args.timeout,
                                                        args.max_memory)
    return config, results


def _open_session(args, m: Measuring):
    """(config, stored results to resume or None, store or None, notes) of a measuring command, all validated before
    any worker starts and (but for --resume) before the database is opened."""
    from .store import open_store

    if args.resume:
        store = open_store(args.db, create=False)
        try:
            return (*_resume(args, store, m), store, [])
        except BaseException:
            store.close()
            raise
    if args.no_store and args.db:
        raise UserError("--db and --no-store exclude each other")
    config, notes = m.resolve(m.choices(**{k: getattr(args, k) for k in m.choices.__dataclass_fields__
                                           if hasattr(args, k)}))
    store = None if args.no_store else open_store(args.db, create=True)  # a bad database stops us before any worker
    return config, None, store, notes


def _measure(args) -> int:
    """``isobench run`` and ``isobench deploy``: one session of the command's kind, its report, its exit code."""
    from .cli_run import RunDisplay
    from .report.sessions import render_results
    from .runner.session import INTERRUPTED, run_session

    json_path = _output_path(args.json, "--json")
    config, resume, store, notes = _open_session(args, _measuring(args.command))
    try:
        for note in notes:
            print(f"note: {note}", file=sys.stderr)
        display = RunDisplay(store, args.db)
        session = run_session(config, store=store, resume=resume, parity=not getattr(args, "no_parity", False),
                              peaks=not getattr(args, "no_peak", False), json_path=json_path, watcher=display)
        display.finish(session)
        _closing(render_results(session.results), session.results.session_id, store, json_path)
    finally:
        if store:
            store.close()
    return _exit_code(session.status == INTERRUPTED, session.ok)


def _closing(report: str, session_id: int | None, store, json_path: Path | None) -> None:
    """The end of a measuring command: its report on stdout, where its records went on stderr."""
    print()
    print(report)
    if json_path:
        print(f"\nAll records written to {json_path}", file=sys.stderr)
    if store:
        print(f"Session {session_id} stored in {store.path} (isobench show {session_id}; isobench history)",
              file=sys.stderr)


def _exit_code(interrupted: bool, ok: bool) -> int:
    return EXIT_INTERRUPTED if interrupted else EXIT_OK if ok else EXIT_FAILED


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
    print("\n".join([describe_session(results, status)] + [parity_line(p) for p in results.parity.values()]))
    print()
    print(render_results(results) if results.records else "No finished records in this session")
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
    from .stats import compare_sessions
    from .store.compare import setup_differences

    with open_store(args.db) as store:
        ids = store.resolve(args.session_a), store.resolve(args.session_b)
        if ids[0] == ids[1]:
            raise UserError(f"both sessions are {ids[0]}; give two different sessions (see 'isobench history')")
        a, b = store.load(ids[0]), store.load(ids[1])
    if a.is_deploy != b.is_deploy:
        raise UserError(f"session {ids[a.is_deploy]} is a deploy session and session {ids[b.is_deploy]} is not; "
                        "compare two training sessions or two deploy sessions")
    groups = compare_sessions(a, b)
    if not groups:
        used = [sorted({r.spec.optimizer for r in x.runs}) for x in (a, b)]
        raise UserError(f"sessions {ids[0]} and {ids[1]} have no (workload, framework, mode) in common"
                        + (" (deploy: no path, precision and batch size)" if a.is_deploy else
                           f" (optimizer implementations: {','.join(used[0])} and {','.join(used[1])}; see --optimizer)"
                           if used[0] != used[1] else ""))
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
    from .runner.executor import make_executor
    from .config import resolve_workload
    from .runner.parity import run_parity
    from .workloads import list_workloads

    workloads = args.workloads or [w.name for w in list_workloads()]
    data_dir = resolve_data_dir(args.data_dir)
    # every workload file validated before any worker starts
    private = {w: resolve_workload(w, data_dir, args.scale).optimizer.private for w in workloads}
    frameworks, notes = resolve_frameworks(args.frameworks)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    missing = [f for f in frameworks if not is_installed(get_backend(f))]
    if missing:
        raise UserError(f"not installed: {', '.join(missing)}; install with: {get_backend(missing[0]).install_hint}")
    modes, mode_notes = resolve_modes(args.modes, frameworks, any(private.values()))
    optimizers, optimizer_notes = resolve_optimizers(args.optimizer, frameworks)
    device, gpus = resolve_device(args.device, None)
    config = RunConfig(workloads, frameworks, modes=modes, precisions=resolve_precisions(args.precision),
                       optimizers=optimizers)
    check_precision_device(config.precisions, device)
    for note in mode_notes + optimizer_notes + config.skipped():
        print(f"note: {note}", file=sys.stderr)
    if not (cells := config.cells()):
        raise UserError("no framework implements the chosen precision(s); see 'isobench list'")
    passed, threads, executor = True, resolve_threads(args.threads), make_executor("local", device, gpus)
    for w in workloads:
        ran = [c for c in cells if runs_mode(c.framework, c.mode, private[w])]  # private modes: dp-sgd only
        progress = Progress(len(ran))
        report = run_parity(w, ran, threads, args.timeout or TIMEOUT_S, on_event=progress.on_event, data_dir=data_dir,
                            device=device, executor=executor, scale=args.scale)
        progress.clear()
        print(render_parity(report, report.notes))
        passed &= report.passed
    return EXIT_OK if passed else EXIT_FAILED


def cmd_list(args) -> int:
    from .report.listing import render_catalogue
    from .workloads import list_workloads

    if args.scale is not None and not args.flops:
        raise UserError("--scale applies to 'isobench list --flops'")
    if args.flops:
        return _list_flops(list_workloads(), args.scale)
    remarks = {"numpy": "  (float64 reference, for parity)"}
    rows = [(b, f"{b.version() or '?'}" if is_installed(b) else f"not installed ({b.install_hint})",
             "" if name in DEFAULT_FRAMEWORKS else remarks.get(name, "  (not compared by default: --frameworks)"))
            for name in REGISTRY for b in [get_backend(name)]]
    print(render_catalogue(list_workloads(), rows))
    from .report.listing import render_deploy_catalogue
    from .runner.deploy import catalogue

    print(render_deploy_catalogue(*catalogue()))
    return EXIT_OK


def _list_flops(workloads, scale: float | None = None) -> int:
    """``isobench list --flops``: every built-in workload's counted FLOPs with its data set's split sizes; with
    ``scale``, each compute-bound workload also at that scale (its row named ``name@scale``)."""
    from dataclasses import replace

    from .config import resolve_workload
    from .data import split_sizes
    from .report.efficiency import render_flops
    from .workloads import SCALABLE
    from .workloads.flops import count_flops

    counts = []
    for w in workloads:
        counts.append(count_flops(w, *split_sizes(w)))
        if scale is not None and w.name in SCALABLE:
            small = resolve_workload(w.name, scale=scale)
            counts.append(count_flops(replace(small, name=f"{w.name}@{scale:g}"), *split_sizes(small)))
    print(render_flops(counts))
    return EXIT_OK


def cmd_peak(args) -> int:
    from .report.efficiency import render_peaks
    from .results import LOW_MATMUL_EFFICIENCY
    from .runner.peak import PEAK_FRAMEWORKS, session_peaks
    from .store import open_store

    frameworks = args.frameworks.split(",") if args.frameworks else \
        [f for f in DEFAULT_FRAMEWORKS if f in PEAK_FRAMEWORKS and is_installed(get_backend(f))]
    unknown = [f for f in frameworks if f not in PEAK_FRAMEWORKS]
    if unknown:
        raise UserError(f"no peak measurement for {', '.join(unknown)}; choose from: {', '.join(PEAK_FRAMEWORKS)}")
    device, _ = resolve_device(args.device, None)
    threads = resolve_threads(args.threads)
    frameworks = list(dict.fromkeys((["numpy"] if device == "cpu" else []) + frameworks))  # numpy: BLAS reference
    with open_store(args.db, create=True) as store:
        again = f" again (below {LOW_MATMUL_EFFICIENCY:.0%} of the machine peak)"
        peaks = session_peaks(frameworks, threads, device, store, force=args.force,
                              on_start=lambda fw, twice: print(f"measuring the peak of {fw}{again * twice} ...",
                                                               file=sys.stderr))
    print(render_peaks(peaks.values(), threads, device))
    for p in peaks.values():
        if p.warning:
            print(f"note: {p.warning}", file=sys.stderr)
    return EXIT_OK if all(p.error is None for p in peaks.values()) else EXIT_FAILED


def cmd_env(args) -> int:
    from .report.listing import render_environment

    env = host_environment()
    print(json.dumps(env, indent=1) if args.json else render_environment(env))
    return EXIT_OK


COMMANDS = {"run": _measure, "deploy": _measure, "history": cmd_history, "show": cmd_show, "export": cmd_export, "compare": cmd_compare,
            "report": cmd_report, "parity": cmd_parity, "list": cmd_list, "peak": cmd_peak, "env": cmd_env}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return EXIT_USAGE
    try:
        return COMMANDS[args.command](args)
    except UserError as e:
        print(f"isobench: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("isobench: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # output piped into a reader that stopped early (isobench export | head)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return EXIT_FAILED

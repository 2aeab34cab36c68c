"""Command line: parse the arguments, resolve those of a command that runs workers into its config
(:func:`~isobench.cli_args.config_of`), call the function behind the command, map errors to exit codes. Exit 0 = all
good, 1 = a run or check failed, 2 = bad input (one line on stderr, no traceback), 130 = interrupted. The measuring
commands, run and deploy, are in :mod:`isobench.cli_run`."""
from __future__ import annotations

import json
import os
import sys

from .backends import DEFAULT_FRAMEWORKS, REGISTRY, get_backend, is_installed
from .cli_args import (EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, build_parser, config_of, output_path,
                       show_notes)
from .errors import UserError
from .measure import host_environment


def _measure(args) -> int:
    """``isobench run`` and ``isobench deploy`` (:func:`isobench.cli_run.measure`; its module, which draws the
    progress, is imported only by them)."""
    from .cli_run import measure

    return measure(args)


def _load(args, session: str | None):
    """(ResultSet, status) of SESSION (default: the latest) from the database of --db."""
    from .store import open_store

    with open_store(args.db) as store:
        session_id = store.resolve(session)
        return store.load(session_id), store.status(session_id)


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

    path = output_path(args.output, "--output")
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
    n = len(results.records)
    print(f"Session {results.session_id}: {n} record{'s' * (n != 1)} written to {path}", file=sys.stderr)
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
    if a.kind != b.kind:
        raise UserError(f"session {ids[0]} is a {a.kind} session and session {ids[1]} a {b.kind} session; compare two "
                        "sessions of one kind (training, deployment or serving)")
    groups = compare_sessions(a, b)
    if not groups:
        used = [sorted({r.spec.optimizer for r in x.runs}) for x in (a, b)]
        raise UserError(f"sessions {ids[0]} and {ids[1]} have no (workload, framework, mode) in common"
                        + (" (deploy: no path, precision and batch size)" if a.is_deploy else
                           " (serving: no scenario, path, precision and batching)" if a.is_serving else
                           f" (optimizer implementations: {','.join(used[0])} and {','.join(used[1])}; see --optimizer)"
                           if used[0] != used[1] else ""))
    print(render_comparison(a, b, groups, setup_differences(a, b)))
    return EXIT_OK


def cmd_report(args) -> int:
    if not (args.html or args.markdown):
        raise UserError("give --html PATH and/or --markdown PATH")
    html, markdown = output_path(args.html, "--html"), output_path(args.markdown, "--markdown")
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
    from .runner.parity import run_parity

    config = config_of(args)
    passed, executor = True, make_executor("local", config.device, config.gpus)
    try:
        for workload, cells in config.cells.items():
            progress = Progress(len(cells))
            report = run_parity(workload, cells, config.threads, config.timeout_s, on_event=progress.on_event,
                                data_dir=config.data_dir, device=config.device, executor=executor, scale=config.scale)
            progress.clear()
            print(render_parity(report, report.notes))
            passed &= report.passed
    finally:
        executor.close()
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
    from .runner.peak import session_peaks
    from .store import open_store

    config = config_of(args)
    again = f" again (below {LOW_MATMUL_EFFICIENCY:.0%} of the machine peak)"
    with open_store(args.db, create=True) as store:
        peaks = session_peaks(config.frameworks, config.threads, config.device, store, force=config.force,
                              on_start=lambda fw, twice: print(f"measuring the peak of {fw}{again * twice} ...",
                                                               file=sys.stderr))
    print(render_peaks(peaks.values(), config.threads, config.device))
    show_notes(p.warning for p in peaks.values() if p.warning)
    return EXIT_OK if all(p.error is None for p in peaks.values()) else EXIT_FAILED


def cmd_env(args) -> int:
    from .report.listing import render_environment

    env = host_environment()
    print(json.dumps(env, indent=1) if args.json else render_environment(env))
    return EXIT_OK


COMMANDS = {"run": _measure, "deploy": _measure, "history": cmd_history, "show": cmd_show, "export": cmd_export,
            "compare": cmd_compare, "report": cmd_report, "parity": cmd_parity, "list": cmd_list, "peak": cmd_peak,
            "env": cmd_env}


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

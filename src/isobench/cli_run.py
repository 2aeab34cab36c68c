"""The measuring commands, ``isobench run`` and ``isobench deploy`` (:func:`measure`): their session, new from the
flags or continued by ``--resume``, run while :class:`RunDisplay` shows on stderr the plan's header line, what is
prepared (parity and peaks; weights), live progress (drawn by :class:`~isobench.report.progress.Progress`) and how
the session ended; then its report on stdout."""
from __future__ import annotations

import sys

from . import __version__
from .cli_args import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, output_path, resolved, show_notes
from .config import DeployConfig, RunConfig
from .errors import UserError
from .report.efficiency import peak_lines
from .report.progress import Progress
from .report.sessions import parity_line, render_results
from .report.words import title
from .results import DEPLOYMENT, LOW_MATMUL_EFFICIENCY, SERVING, TRAINING, ParityResult, PeakRecord, RunRecord, RunSpec
from .runner.session import FINISHED, INTERRUPTED, Session, Watcher, check_resumable, run_session

# flags that would change the stored plan of a session that --resume continues
RESUME_CONFLICTS = ("workloads", "frameworks", "modes", "precision", "optimizer", "repeats", "warmup", "seed", "seeds",
                    "threads", "data_dir", "scale", "until_confident", "target_width", "max_repeats", "no_store",
                    "gpus", "no_counterpart", "paths", "batch_sizes", "quantize", "calls", "trained_by",
                    "keep_artifacts")
STORED = {"run": RunConfig, "deploy": DeployConfig}  # the config a session of each command stores, read by --resume


def measure(args) -> int:
    """``isobench run`` and ``isobench deploy``: one session of the command's kind, its report, its exit code."""
    json_path = output_path(args.json, "--json")
    config, resume, store, notes = _open_session(args)
    try:
        show_notes(notes)
        display = RunDisplay(store, args.db)
        session = run_session(config, store=store, resume=resume, parity=not getattr(args, "no_parity", False),
                              peaks=not getattr(args, "no_peak", False), json_path=json_path, watcher=display)
        display.finish(session)
        print()
        print(render_results(session.results))
        if json_path:
            _err(f"\nAll records written to {json_path}")
        if store:
            _err(f"Session {session.results.session_id} stored in {store.path} (isobench show "
                 f"{session.results.session_id}; isobench history)")
    finally:
        if store:
            store.close()
    return EXIT_INTERRUPTED if session.status == INTERRUPTED else EXIT_OK if session.ok else EXIT_FAILED


def _open_session(args):
    """(config, stored results to resume or None, store or None, notes) of a measuring command, all validated before
    any worker starts and (but for --resume) before the database is opened."""
    from .store import open_store

    if args.resume:
        store = open_store(args.db, create=False)
        try:
            config, results, notes = _resume(args, store)
        except BaseException:
            store.close()
            raise
        return config, results, store, notes
    if args.no_store and args.db:
        raise UserError("--db and --no-store exclude each other")
    config, notes = resolved(args)
    store = None if args.no_store else open_store(args.db, create=True)  # a bad database stops us before any worker
    return config, None, store, notes


def _resume(args, store):
    """(config, stored results, notes) of ``--resume SESSION``: its stored configuration, checked again on this
    machine (its threads, workload files, data sets), and its records; a session of another kind is refused with the
    command that continues it."""
    given = [f"--{n.replace('_', '-')}" for n in RESUME_CONFLICTS if getattr(args, n, None) not in (None, False, [])]
    if given:
        raise UserError(f"--resume reruns the stored plan of the session; drop {', '.join(given)}")
    session_id = store.resolve(args.resume)
    results, stored = store.load(session_id), STORED[args.command]
    check_resumable(results, f"isobench {args.command}", session_id)
    config = stored.from_dict(results.config).resumed(session_id, args.executor, args.ray_address, args.timeout,
                                                      args.max_memory)
    try:
        return config, results, config.check()
    except UserError as e:
        raise UserError(f"stored session {session_id}: {e}") from None


def _err(text: str) -> None:
    print(text, file=sys.stderr)


class RunDisplay(Watcher):
    """The command line's :class:`~isobench.runner.session.Watcher`; ``db`` is the --db given, if any (named in
    the line that says how to resume)."""

    def __init__(self, store=None, db: str | None = None):
        self.store, self.db = store, db
        self.progress = self.runs = None  # the Progress drawing now (parity's, then the runs')

    def started(self, session: Session) -> None:
        _err(header(session) if session.kind.name == TRAINING else deploy_header(session))
        if session.kind.name in (DEPLOYMENT, SERVING):  # the exports come first and are records too
            from .report.progress import DeployProgress
            self.progress = self.runs = DeployProgress(session.todo)

    def training(self, workload: str, trained_by: str) -> None:
        _err(f"training the weights of {workload} with {trained_by} (once; cached for later sessions) ...")

    def weights(self, workload: str, info: dict) -> None:
        from .report.words import weights_line

        _err(weights_line(workload, info))

    def parity_started(self, workload: str, cells: int) -> None:
        self.progress = Progress(cells)

    def parity_done(self, summary: ParityResult) -> None:
        self.progress.clear()
        _err(parity_line(summary))

    def peak_started(self, framework: str, again: bool = False) -> None:
        why = f"again: below {LOW_MATMUL_EFFICIENCY:.0%} of the machine peak" if again else \
            "no recent uncontended stored measurement"
        print(f"measuring the peak of {framework} ({why}) ...", end="\r" if sys.stderr.isatty() else "\n",
              file=sys.stderr, flush=True)  # a log file gets one line per measurement, a terminal one line in all

    def peaks_done(self, peaks: dict[str, PeakRecord]) -> None:
        _err("\x1b[2K" * sys.stderr.isatty() + "\n".join(peak_lines(peaks.values())))
        for p in peaks.values():
            if p.warning:
                _err(f"note: {p.warning}")

    def runs_started(self, session: Session) -> None:
        if session.kind.name == TRAINING:
            self.progress = self.runs = Progress(session.todo)

    def event(self, spec: RunSpec, event: dict) -> None:
        if self.progress:
            self.progress.on_event(spec, event)

    def record(self, record: RunRecord) -> None:
        self.runs.on_record(record)

    def finish(self, session: Session) -> None:
        """After the session: how it ended (interrupted: how to continue; adaptive: whether it got confident)."""
        if session.status == INTERRUPTED:
            results = session.results
            _err(f"\ninterrupted: {session.measured} of {session.todo} {session.kind.units} finished and kept"
                 + (f"; continue with: {session.kind.command} --resume {results.session_id}"
                    + (f" --db {self.store.path}" if self.db else "") if self.store else ""))
        if self.runs:
            self.runs.finish()
        if session.config.adaptive and session.status == FINISHED:
            _err(adaptive_outcome(session))


def header(session: Session) -> str:
    """The line that says what the session will run: workloads, cells, repeats, threads, device, processes."""
    config, adaptive = session.config, session.config.adaptive
    repeats = (f"{config.repeats} to {config.max_repeats} repeats until every interval is within "
               f"±{100 * config.target_width:g}%" if adaptive else f"{config.repeats} repeats")
    where = config.device + (f" (GPUs {', '.join(map(str, config.gpus))})" if config.device == "cuda" else "")
    return (f"isobench {__version__}: {', '.join(session.workloads)} | {', '.join(map(str, config.cells()))} | {repeats}, "
            f"{config.threads} threads on {where}, {'up to ' if adaptive else ''}{session.todo} worker processes in "
            f"interleaved order (seed {config.seed})"
            + (f"; weights and orders from {config.seeds} seeds (repeat r: seed s + r mod {config.seeds})"
               if config.seeds > 1 else "")
            + (f"; resuming session {session.results.session_id}: {session.total - session.todo} of {session.total} "
               "runs already measured" + (f", {len(session.lost)} lost by the executor run again" if session.lost else "")
               if session.resumed else "")
            + (f"; executor {config.executor}" if config.executor != "local" else ""))


def _gpu_list(gpus: list[int]) -> str:
    return ", ".join(map(str, gpus)) or "0"


def deploy_header(session: Session) -> str:
    """The line that says what a deployment or serving session will run."""
    c = session.config
    what = (f"scenarios {', '.join(c.scenarios)} (LoadGen; p99 bound {c.latency_bound_s * 1e3:g} ms, runs of at least "
            f"{c.duration_s:g} s and {c.min_queries} queries, {c.concurrency} executing thread"
            f"{'s' * (c.concurrency > 1)}, batching {'/'.join(c.batching)}), {c.repeats} load workers per path, "
            "precision, scenario and batching" if c.scenarios else
            f"batch {', '.join(map(str, c.batch_sizes))} | {c.repeats} serving processes per path and precision, each "
            f"serving every batch size, {c.calls} timed calls per batch size after {c.warmup} warm-up")
    return (f"isobench {__version__} deploy: {', '.join(c.workloads)} | {len(c.paths)} paths ({', '.join(c.paths)}) | "
            f"{'/'.join('fp32' if q == 'none' else q for q in c.quantize)} | {what}, {c.threads} threads on "
            f"{c.device}{f' (GPUs {_gpu_list(c.gpus)})' if c.device == 'cuda' else ''}; up to "
            f"{session.todo} worker processes (seed {c.seed})"
            + (f"; resuming session {session.results.session_id}: {session.total - session.todo} of {session.total} "
               "units already done" if session.resumed else "")
            + (f"; executor {c.executor}" if c.executor != "local" else ""))


def adaptive_outcome(session: Session) -> str:
    """Whether adaptive repeats reached the target width, and where the widest interval (or a too small group) is."""
    p, config = session.precision, session.config
    target, w = f"±{100 * config.target_width:g}%", p.widest
    where = f"{w.workload}: {w.group.label} {title(w.metric)} {w.of}" if w else "no ok runs"
    if p.confident:
        return (f"Confident after {session.adaptive.repeats} repeats: every training-time and steady-step-time "
                f"interval is within {target} (widest ±{100 * p.width:.1f}%, {where})")
    few = p.too_few
    why = (f"{few.workload}: {few.group.label} has {few.n} ok processes, fewer than the {few.need} a claim needs"
           if few else f"widest interval ±{100 * p.width:.1f}% ({where})")
    return f"Stopped at --max-repeats {config.max_repeats} without reaching {target}: {why}"

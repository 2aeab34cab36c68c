"""The results database: SQLite, one session per ``isobench run``, one row per worker process.

Writers open it in WAL mode with a busy timeout and write every finished run in its own ``BEGIN IMMEDIATE``
transaction, so two isobench processes can append to the same file at once and an interruption loses no
finished run. The schema version is ``PRAGMA user_version``; :data:`MIGRATIONS` takes a database forward one
version at a time, and a database written by a newer isobench is refused. A file that is not an isobench
database is refused without being touched.
"""
from __future__ import annotations

import itertools
import json
import os
import signal
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import quote

from ..errors import UserError
from ..results import (OK, TRAINING, DeployRecord, LoadRecord, ParityResult, PeakRecord, PrivacyRecord, Record,
                       ResultSet, RunRecord, RunSpec, migrate_run_v1, to_dicts)

DB_ENV = "ISOBENCH_DB"
DEFAULT_DB = Path("isobench-results") / "isobench.db"  # relative to the working directory
APPLICATION_ID = 0x69736F62  # "isob" in PRAGMA application_id: marks the file as ours
BUSY_TIMEOUT_MS = 30_000     # how long a writer waits for another writer's transaction
SQLITE_MAGIC = b"SQLite format 3\x00"
PEAK_KEY = ("host", "cpu_model", "framework", "version", "device", "threads")  # a stored peak is reused for these
PEAK_MAX_AGE = timedelta(days=7)  # ... while younger than this (docs/efficiency.md)

RUNNING, FINISHED, INTERRUPTED, FAILED = "running", "finished", "interrupted", "failed"  # session status
SPEC_COLUMNS = tuple(f.name for f in fields(RunSpec))
RECORD_COLUMNS = ("order", "status", "error", "exit_code", "signal", "stderr_tail", "wall_s", "lost", "replaces",
                  "contended")
JSON_COLUMNS = ("metrics", "environment", "fingerprints")
RUN_COLUMNS = SPEC_COLUMNS + RECORD_COLUMNS + JSON_COLUMNS
DEPLOY_COLUMNS = ("workload", "path", "quantize", "batch_size", "repeat", "threads",  # DeploySpec.to_dict
                  "order", "status", "error", "exit_code", "signal", "stderr_tail", "wall_s", "metrics", "environment",
                  "lost", "replaces")
LOAD_COLUMNS = ("workload", "path", "quantize", "scenario", "batching", "repeat", "threads",  # LoadSpec.to_dict
                "order", "status", "error", "exit_code", "signal", "stderr_tail", "wall_s", "lost", "replaces",
                "metrics", "environment")


def _table(record: Record | type) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """(table, columns in order, JSON columns) of a record's kind (a record or its type)."""
    kind = record if isinstance(record, type) else type(record)
    if issubclass(kind, LoadRecord):
        return "load_runs", LOAD_COLUMNS, ("metrics", "environment")
    if issubclass(kind, DeployRecord):
        return "deploy_runs", DEPLOY_COLUMNS, ("metrics", "environment")
    return "runs", RUN_COLUMNS, JSON_COLUMNS


def _insert(session_id: int, record: Record) -> tuple[str, tuple]:
    """The INSERT statement and values of one record (a key its JSON form leaves out is NULL)."""
    table, columns, json_columns = _table(record)
    row = record.to_dict()
    values = tuple(None if (v := row.get(c)) is None else _dumps(v) if c in json_columns else v for c in columns)
    quoted = ", ".join(f'"{c}"' for c in columns)
    return f"INSERT INTO {table} (session_id, {quoted}) VALUES ({', '.join('?' * (len(columns) + 1))})", \
        (session_id, *values)


def _v1(conn: sqlite3.Connection) -> None:
    """Sessions and runs; JSON columns hold what has no fixed shape (metrics keep the raw step times)."""
    # one execute() per statement: executescript() would commit the migration's transaction first
    for statement in ("""
        CREATE TABLE sessions (
            id               INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused, even after a delete
            created_at       TEXT NOT NULL,                      -- ISO 8601, UTC
            finished_at      TEXT,
            isobench_version TEXT NOT NULL,
            status           TEXT NOT NULL,                      -- running | finished | interrupted | failed
            config           TEXT NOT NULL,                      -- JSON: the resolved RunConfig
            environment      TEXT NOT NULL,                      -- JSON: the host environment record
            parity           TEXT NOT NULL DEFAULT '{}'          -- JSON: workload -> compact parity result
        )""", """
        CREATE TABLE runs (
            id           INTEGER PRIMARY KEY AUTOINCREMENT,
            session_id   INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            workload     TEXT NOT NULL,
            framework    TEXT NOT NULL,
            mode         TEXT NOT NULL,
            repeat       INTEGER NOT NULL,                       -- 0-based
            threads      INTEGER NOT NULL,
            device       TEXT NOT NULL,
            precision    TEXT NOT NULL,
            "order"      INTEGER NOT NULL,                       -- position in the interleaved plan
            status       TEXT NOT NULL,                          -- ok | failed | crashed | timeout | ...
            error        TEXT,
            exit_code    INTEGER,
            signal       INTEGER,
            stderr_tail  TEXT,
            wall_s       REAL,                                   -- seconds, seen by the parent
            metrics      TEXT,                                   -- JSON: results.Metrics, null when failed
            environment  TEXT NOT NULL,                          -- JSON: the worker's effective settings
            fingerprints TEXT NOT NULL,                          -- JSON: hashes of data, orders, weights
            UNIQUE (session_id, workload, framework, mode, repeat, threads, device, precision)
        )""", 'CREATE INDEX runs_by_session ON runs (session_id, "order")'):
        conn.execute(statement)


def _v2(conn: sqlite3.Connection) -> None:
    """The executor's marks become columns: ``lost`` (the exception with which the executor lost the cell) and
    ``replaces`` (a --resume rerun: the lost record's status and error), moved out of the environment JSON."""
    for column in ("lost", "replaces"):
        conn.execute(f"ALTER TABLE runs ADD COLUMN {column} TEXT")
    for run_id, environment in conn.execute("SELECT id, environment FROM runs").fetchall():
        run = migrate_run_v1({"environment": json.loads(environment)})
        if run["lost"] is not None or run["replaces"] is not None:
            conn.execute("UPDATE runs SET lost = ?, replaces = ?, environment = ? WHERE id = ?",
                         (run["lost"], run["replaces"], _dumps(run["environment"]), run_id))


def _v3(conn: sqlite3.Connection) -> None:
    """The machine's measured peaks (``isobench peak``; reused while recent, see :meth:`Store.recent_peak`) and
    the peaks each session compared its runs with. Counted FLOPs and energy live in the runs' metrics JSON."""
    conn.execute("ALTER TABLE sessions ADD COLUMN peaks TEXT NOT NULL DEFAULT '{}'")  # JSON: framework -> peak
    conn.execute("""
        CREATE TABLE peaks (
            id           INTEGER PRIMARY KEY AUTOINCREMENT,
            host         TEXT NOT NULL,
            cpu_model    TEXT NOT NULL,
            framework    TEXT NOT NULL,
            version      TEXT NOT NULL,                          -- the framework's version
            device       TEXT NOT NULL,
            threads      INTEGER NOT NULL,
            measured_at  TEXT NOT NULL,                          -- ISO 8601, UTC
            peak         TEXT NOT NULL                           -- JSON: runner.peak's record
        )""")
    conn.execute("CREATE INDEX peaks_by_key ON peaks (host, cpu_model, framework, version, device, threads, "
                 "measured_at)")


def _privacy(conn: sqlite3.Connection) -> None:
    """The privacy guarantee of each DP-SGD workload of a session (``ResultSet.privacy``); older sessions: {}."""
    conn.execute("ALTER TABLE sessions ADD COLUMN privacy TEXT NOT NULL DEFAULT '{}'")  # JSON: workload -> guarantee


def _deploy_runs(conn: sqlite3.Connection) -> None:
    """``isobench deploy`` sessions: one row per export or serving worker (metrics JSON keeps the per-call
    latencies), and the session's trained weights (workload -> fingerprint, trained_by)."""
    conn.execute("ALTER TABLE sessions ADD COLUMN weights TEXT NOT NULL DEFAULT '{}'")  # JSON
    conn.execute("""
        CREATE TABLE deploy_runs (
            id           INTEGER PRIMARY KEY AUTOINCREMENT,
            session_id   INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            workload     TEXT NOT NULL,
            path         TEXT NOT NULL,                          -- backends.deploy path id, "torch/onnx"
            quantize     TEXT NOT NULL,                          -- none | int8
            batch_size   INTEGER NOT NULL,                       -- 0: the export step
            repeat       INTEGER NOT NULL,
            threads      INTEGER NOT NULL,
            "order"      INTEGER NOT NULL,
            status       TEXT NOT NULL,
            error        TEXT,
            exit_code    INTEGER,
            signal       INTEGER,
            stderr_tail  TEXT,
            wall_s       REAL,
            metrics      TEXT,                                   -- JSON: results.DeployMetrics
            environment  TEXT NOT NULL,                          -- JSON
            UNIQUE (session_id, workload, path, quantize, batch_size, repeat, threads)
        )""")
    conn.execute('CREATE INDEX deploy_runs_by_session ON deploy_runs (session_id, "order")')


def _optimizer_runs(conn: sqlite3.Connection) -> None:
    """The optimizer implementation (``library`` or ``neutral``) joins a run's identity: a column in the runs table's
    UNIQUE key. SQLite cannot alter a constraint, so the table is rebuilt and its rows copied (ids kept) with
    ``neutral``: every earlier run stepped with isobench's own update rules."""
    old = [row[1] for row in conn.execute("PRAGMA table_info(runs)")]
    conn.execute("""
        CREATE TABLE runs_rebuilt (
            id           INTEGER PRIMARY KEY AUTOINCREMENT,
            session_id   INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            workload     TEXT NOT NULL,
            framework    TEXT NOT NULL,
            mode         TEXT NOT NULL,
            repeat       INTEGER NOT NULL,                       -- 0-based
            threads      INTEGER NOT NULL,
            device       TEXT NOT NULL,
            precision    TEXT NOT NULL,
            optimizer    TEXT NOT NULL DEFAULT 'neutral',        -- library | neutral
            "order"      INTEGER NOT NULL,                       -- position in the interleaved plan
            status       TEXT NOT NULL,                          -- ok | failed | crashed | timeout | ...
            error        TEXT,
            exit_code    INTEGER,
            signal       INTEGER,
            stderr_tail  TEXT,
            wall_s       REAL,                                   -- seconds, seen by the parent
            metrics      TEXT,                                   -- JSON: results.Metrics, null when failed
            environment  TEXT NOT NULL,                          -- JSON: the worker's effective settings
            fingerprints TEXT NOT NULL,                          -- JSON: hashes of data, orders, weights
            lost         TEXT,
            replaces     TEXT,
            UNIQUE (session_id, workload, framework, mode, repeat, threads, device, precision, optimizer)
        )""")
    columns = ", ".join(f'"{c}"' for c in old)
    conn.execute(f"INSERT INTO runs_rebuilt ({columns}) SELECT {columns} FROM runs")
    conn.execute("DROP TABLE runs")  # its index goes with it
    conn.execute("ALTER TABLE runs_rebuilt RENAME TO runs")
    conn.execute('CREATE INDEX runs_by_session ON runs (session_id, "order")')


def _contended_runs(conn: sqlite3.Connection) -> None:
    """Whether a run was measured while other processes took its CPUs (``RunRecord.contended``, derived from the
    contention its worker measured): a column, so that such runs can be found with SQL. Earlier runs measured no
    contention: NULL."""
    conn.execute("ALTER TABLE runs ADD COLUMN contended INTEGER")  # 1 under load, 0 quiet, NULL not measured


def _lost_deploys(conn: sqlite3.Connection) -> None:
    """Deployment sessions run through the executor as training sessions do: a serving unit the executor lost
    (``lost``) is run again by ``--resume`` and its new records say what they replace (``replaces``)."""
    for column in ("lost", "replaces"):
        conn.execute(f"ALTER TABLE deploy_runs ADD COLUMN {column} TEXT")


def _load_runs(conn: sqlite3.Connection) -> None:
    """Serving sessions (``isobench deploy --scenario``): one row per load worker, a scenario served under LoadGen
    (metrics JSON keeps every LoadGen run of the server's search)."""
    conn.execute("""
        CREATE TABLE load_runs (
            id           INTEGER PRIMARY KEY AUTOINCREMENT,
            session_id   INTEGER NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
            workload     TEXT NOT NULL,
            path         TEXT NOT NULL,                          -- backends.deploy path id, "torch/onnx"
            quantize     TEXT NOT NULL,                          -- none | int8
            scenario     TEXT NOT NULL,                          -- single-stream | multi-stream | offline | server
            batching     TEXT NOT NULL,                          -- off | dynamic
            repeat       INTEGER NOT NULL,
            threads      INTEGER NOT NULL,
            "order"      INTEGER NOT NULL,
            status       TEXT NOT NULL,
            error        TEXT,
            exit_code    INTEGER,
            signal       INTEGER,
            stderr_tail  TEXT,
            wall_s       REAL,
            lost         TEXT,
            replaces     TEXT,
            metrics      TEXT,                                   -- JSON: results.LoadMetrics, null when failed
            environment  TEXT NOT NULL                           -- JSON: the worker's settings, runtime version
        )""")
    conn.execute('CREATE INDEX load_runs_by_session ON load_runs (session_id, "order")')


# MIGRATIONS[i] takes a database from schema version i to i + 1 (version 0: empty file). Append, never edit.
MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_v1, _v2, _v3, _privacy, _deploy_runs, _optimizer_runs,
                                                          _contended_runs, _lost_deploys, _load_runs]
SCHEMA_VERSION = len(MIGRATIONS)


def default_db_path(explicit: str | None = None) -> Path:
    """``--db`` if given, else ``$ISOBENCH_DB``, else ``./isobench-results/isobench.db``."""
    return Path(explicit or os.environ.get(DB_ENV) or DEFAULT_DB)


def open_store(explicit: str | None = None, create: bool = False) -> "Store":
    """The :class:`Store` at :func:`default_db_path`; a writer creates the default ``isobench-results/``
    directory (an explicit path's directory must exist, so a typo is an error rather than a new tree)."""
    path = default_db_path(explicit)
    if create and path == DEFAULT_DB:
        path.parent.mkdir(exist_ok=True)
    return Store(path, create=create)


@dataclass(frozen=True)
class SessionInfo:
    """One line of ``isobench history``."""
    id: int
    created_at: str
    status: str
    workloads: list[str]
    frameworks: list[str]
    ok: int                          # runs with status ok
    failed: int                      # runs with any other status
    parity_passed: bool | None       # None: parity was not checked
    kind: str = TRAINING             # TRAINING, DEPLOYMENT or SERVING, as ResultSet.kind reads it from the config
    paths: tuple[str, ...] = ()      # deployment and serving: the paths served
    scenarios: tuple[str, ...] = ()  # serving: LoadGen's scenarios


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))  # NaN allowed: a stored run must never be refused


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block ends, then deliver them: a Ctrl-C between the INSERT and the
    COMMIT would otherwise roll back a run that had already finished."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    old = {s: signal.signal(s, lambda n, _f: caught.append(n)) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)
        if caught:
            signal.raise_signal(caught[0])


class Store:
    """An open results database. ``create=True`` (writers) creates the file and migrates it; readers need
    an existing database. Every problem with the file is a one-line :class:`UserError`."""

    def __init__(self, path: str | Path, create: bool = False):
        self.path = Path(path)
        if self.path.is_dir():
            raise UserError(f"results database {self.path} is a directory")
        if not self.path.exists():
            if not create:
                raise UserError(f"no results database at {self.path}; 'isobench run' creates it "
                                f"(location: --db PATH, ${DB_ENV} or ./{DEFAULT_DB})")
            if not self.path.parent.is_dir():
                raise UserError(f"results database directory {self.path.parent} does not exist")
        else:
            self._check_header()
        uri = f"file:{quote(str(self.path.absolute()))}?mode={'rwc' if create else 'rw'}"
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        for attempt in itertools.count():
            try:
                self.conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
            except sqlite3.Error as e:
                raise UserError(f"cannot open results database {self.path}: {e}") from None
            try:
                self._set_up(create)
                return
            except sqlite3.OperationalError as e:
                self.conn.close()
                # Two processes creating the same new file can both hold a shared lock and both want the
                # exclusive one (switching to WAL, first migration); SQLite then answers "locked" at once,
                # without waiting on the busy timeout. Opening again resolves it: the other one has finished.
                if "locked" not in str(e) or time.monotonic() > deadline:
                    raise UserError(self._unusable(e)) from None
                time.sleep(min(0.01 * 2 ** attempt, 0.5))
            except sqlite3.Error as e:
                self.conn.close()
                raise UserError(self._unusable(e)) from None
            except UserError:
                self.conn.close()
                raise

    def _set_up(self, create: bool) -> None:
        self.conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        self._check_version()
        if create and self._pragma("journal_mode") != "wal":
            # WAL: readers never block the writer and two writers queue on the busy timeout
            self.conn.execute("PRAGMA journal_mode = WAL")
        self._migrate()
        self.conn.execute("PRAGMA foreign_keys = ON")

    def _unusable(self, e: sqlite3.Error) -> str:
        """The one-line error for a database SQLite cannot use, with what to do about it."""
        other = f"give another path with --db or ${DB_ENV}"
        if "readonly" in str(e):  # WAL: even reading needs to write the -shm file beside the database
            return (f"results database {self.path} is read-only ({e}); make it and its folder writable, or {other}")
        if "not a database" in str(e) or "malformed" in str(e):
            return f"results database {self.path} is corrupt ({e}); it is left untouched: {other}"
        return f"cannot use results database {self.path}: {e}"

    def _check_header(self) -> None:
        """Refuse a file that is not SQLite before SQLite opens it (an empty file is a new database)."""
        try:
            with open(self.path, "rb") as f:
                head = f.read(len(SQLITE_MAGIC))
        except OSError as e:
            raise UserError(f"cannot read results database {self.path}: {e.strerror}") from None
        if head and head != SQLITE_MAGIC:
            raise UserError(f"{self.path} is not an SQLite database; give another path with --db or ${DB_ENV}")

    def _pragma(self, name: str) -> Any:
        return self.conn.execute(f"PRAGMA {name}").fetchone()[0]

    def _check_version(self) -> None:
        # One statement, so one snapshot: read apart, another process's first migration could commit in between
        # and show tables without the application id.
        version, app, tables = self.conn.execute(
            "SELECT (SELECT user_version FROM pragma_user_version), (SELECT application_id FROM pragma_application_id),"
            " (SELECT count(*) FROM sqlite_master)").fetchone()
        if app != APPLICATION_ID and (app or tables):
            raise UserError(f"{self.path} is an SQLite database but not an isobench results database; it is left "
                            f"untouched: give another path with --db or ${DB_ENV}")
        if version > SCHEMA_VERSION:
            raise UserError(f"results database {self.path} has schema version {version}, newer than this isobench "
                            f"reads ({SCHEMA_VERSION}); upgrade isobench to use it")

    def _migrate(self) -> None:
        if self._pragma("user_version") == SCHEMA_VERSION:
            return
        with self._transaction():
            self._check_version()  # again under the write lock: another process may have migrated meanwhile
            for step in MIGRATIONS[self._pragma("user_version"):]:
                step(self.conn)
            self.conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            self.conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; it takes the write lock at BEGIN (waiting up to the busy timeout)."""
        with _signals_deferred():
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    @contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """A write transaction whose database errors become one-line :class:`UserError` s."""
        try:
            with self._transaction() as c:
                yield c
        except sqlite3.Error as e:
            raise UserError(self._unusable(e) if "readonly" in str(e) else
                            f"cannot write to results database {self.path}: {e}") from None

    def _write(self, sql: str, params: tuple) -> int:
        with self._writing() as c:
            return c.execute(sql, params).lastrowid

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # writing

    def create_session(self, results: ResultSet, status: str = RUNNING) -> int:
        """Insert the session of ``results`` (configuration, environment, parity), without its runs; sets and
        returns ``results.session_id``."""
        results.session_id = self._write(
            "INSERT INTO sessions (created_at, isobench_version, status, config, environment, parity, peaks, privacy) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (results.created_at or _now(), results.isobench_version, status,
                                                _dumps(results.config), _dumps(results.environment),
                                                _dumps(to_dicts(results.parity)), _dumps(to_dicts(results.peaks)),
                                                _dumps(to_dicts(results.privacy))))
        return results.session_id

    def add_record(self, session_id: int, record: Record) -> None:
        """Store one finished record (a training run or a deployment record) in its own transaction."""
        self._write(*_insert(session_id, record))

    def add_run(self, session_id: int, record: RunRecord) -> None:
        self.add_record(session_id, record)

    def replace_record(self, session_id: int, record: Record) -> None:
        """Store ``record`` in place of the session's record of the same spec, in one transaction (``--resume``
        rerunning a unit the executor lost)."""
        table, columns, _ = _table(record)
        row = record.to_dict()
        spec = tuple(record.spec.to_dict()) if hasattr(record.spec, "to_dict") else SPEC_COLUMNS  # its identity
        where = " AND ".join(f'"{c}" = ?' for c in spec)
        with self._writing() as c:
            c.execute(f"DELETE FROM {table} WHERE session_id = ? AND {where}", (session_id, *(row[k] for k in spec)))
            c.execute(*_insert(session_id, record))

    def replace_run(self, session_id: int, record: RunRecord) -> None:
        self.replace_record(session_id, record)

    def set_weights(self, session_id: int, weights: dict[str, Any]) -> None:
        """A deploy session's trained weights (workload -> fingerprint, trained_by, ...)."""
        self._write("UPDATE sessions SET weights = ? WHERE id = ?", (_dumps(weights), session_id))

    def set_parity(self, session_id: int, parity: dict[str, ParityResult]) -> None:
        self._write("UPDATE sessions SET parity = ? WHERE id = ?", (_dumps(to_dicts(parity)), session_id))

    def set_peaks(self, session_id: int, peaks: dict[str, PeakRecord]) -> None:
        """The peaks (framework -> record) the session's runs are compared with."""
        self._write("UPDATE sessions SET peaks = ? WHERE id = ?", (_dumps(to_dicts(peaks)), session_id))

    def add_peak(self, peak: PeakRecord) -> None:
        """Store one measured peak (a :func:`isobench.runner.peak.measure_peak` record: host, cpu_model,
        framework, version, device, threads, measured_at and the measurement)."""
        self._write("INSERT INTO peaks (host, cpu_model, framework, version, device, threads, measured_at, peak) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (*(str(getattr(peak, k) or "") for k in PEAK_KEY[:4]),
                                                        peak.device, peak.threads, peak.measured_at,
                                                        _dumps(peak.to_dict())))

    def recent_peak(self, key: dict[str, Any], now: datetime | None = None,
                    max_age: timedelta = PEAK_MAX_AGE) -> PeakRecord | None:
        """The newest stored peak with the same :data:`PEAK_KEY` values as ``key`` measured less than ``max_age``
        before ``now`` (default: the current time) and not under contention (its ``contended`` flag), else
        ``None``."""
        now = now or datetime.now(timezone.utc)
        row = self.conn.execute(
            "SELECT peak, measured_at FROM peaks WHERE host = ? AND cpu_model = ? AND framework = ? AND version = ? "
            "AND device = ? AND threads = ? AND coalesce(json_extract(peak, '$.contended'), 0) = 0 "
            "ORDER BY measured_at DESC, id DESC LIMIT 1",
            (*(str(key.get(k) or "") for k in PEAK_KEY[:4]), key["device"], key["threads"])).fetchone()
        if row is None or now - datetime.fromisoformat(row[1]) >= max_age:
            return None
        return PeakRecord.from_dict(json.loads(row[0]))

    def finish_session(self, session_id: int, status: str = FINISHED) -> None:
        self._write("UPDATE sessions SET status = ?, finished_at = ? WHERE id = ?", (status, _now(), session_id))

    def reopen_session(self, session_id: int) -> None:
        """Mark a session running again (``isobench run --resume`` adds its missing runs)."""
        self._write("UPDATE sessions SET status = ?, finished_at = NULL WHERE id = ?", (RUNNING, session_id))

    def save(self, results: ResultSet, status: str = FINISHED) -> int:
        """Store a whole :class:`ResultSet` as a new session (e.g. one read from a JSON file); returns its id."""
        session_id = self.create_session(results, status)
        for record in results.records:
            self.add_record(session_id, record)
        if results.weights:
            self.set_weights(session_id, results.weights)
        return session_id

    # reading

    def resolve(self, text: str | None) -> int:
        """The session id named by ``text`` (a number or ``latest``); ``None`` means the latest session."""
        hint = "list them with 'isobench history'"
        if text in (None, "latest"):
            row = self.conn.execute("SELECT max(id) FROM sessions").fetchone()
            if row[0] is None:
                raise UserError(f"no sessions in {self.path} yet; 'isobench run' records one")
            return row[0]
        try:
            session_id = int(text)
        except ValueError:
            raise UserError(f"session must be a number or 'latest', got {text!r}; {hint}") from None
        if not self.conn.execute("SELECT 1 FROM sessions WHERE id = ?", (session_id,)).fetchone():
            raise UserError(f"no session {session_id} in {self.path}; {hint}")
        return session_id

    def sessions(self) -> list[SessionInfo]:
        """Every session, oldest first, with its run counts."""
        rows = self.conn.execute("""
            SELECT s.id, s.created_at, s.status, s.config, s.parity,
                   (SELECT count(*) FROM runs r WHERE r.session_id = s.id)
                   + (SELECT count(*) FROM deploy_runs d WHERE d.session_id = s.id)
                   + (SELECT count(*) FROM load_runs l WHERE l.session_id = s.id),
                   (SELECT count(*) FROM runs r WHERE r.session_id = s.id AND r.status = ?)
                   + (SELECT count(*) FROM deploy_runs d WHERE d.session_id = s.id AND d.status = ?)
                   + (SELECT count(*) FROM load_runs l WHERE l.session_id = s.id AND l.status = ?)
            FROM sessions s ORDER BY s.id""", (OK, OK, OK))
        out = []
        for sid, created, status, config, parity, total, ok in rows:
            config, parity = json.loads(config), json.loads(parity)
            passed = all(p.passed for p in ParityResult.from_dicts(parity).values()) if parity else None
            if config.get("command") == "deploy":  # the fp32 rows' logit parity of its serving and load workers
                passed = self._deploy_parity(sid)
            out.append(SessionInfo(sid, created, status, config.get("workloads", []), config.get("frameworks", []),
                                   ok, total - ok, passed, ResultSet(config, {}).kind, tuple(config.get("paths", ())),
                                   tuple(config.get("scenarios", ()))))
        return out

    def _deploy_parity(self, session_id: int) -> bool | None:
        """Whether every parity-checked serving worker of a deploy session was within its logit tolerance, and every
        checked answer of its load workers (a serving session)."""
        (checked, failed), (answered, wrong) = self.conn.execute(
            "SELECT count(*), coalesce(sum(json_extract(metrics, '$.max_abs_logit_diff') > "
            "json_extract(metrics, '$.logit_tolerance')), 0) FROM deploy_runs WHERE session_id = ? AND status = ? "
            "AND json_extract(metrics, '$.logit_tolerance') IS NOT NULL", (session_id, OK)).fetchone(), \
            self.conn.execute("SELECT count(*), coalesce(sum(json_extract(metrics, '$.wrong_answers') > 0), 0) FROM "
                              "load_runs WHERE session_id = ? AND json_extract(metrics, '$.logit_tolerance') IS NOT "
                              "NULL", (session_id,)).fetchone()
        return None if not checked + answered else not failed + wrong

    def load(self, session: int | str | None = None) -> ResultSet:
        """The :class:`ResultSet` of a session (default: the latest), runs in plan order."""
        session_id = session if isinstance(session, int) else self.resolve(session)
        row = self.conn.execute("SELECT created_at, isobench_version, config, environment, parity, peaks, privacy, "
                                "weights FROM sessions WHERE id = ?", (session_id,)).fetchone()
        if row is None:
            raise UserError(f"no session {session_id} in {self.path}; list them with 'isobench history'")
        created, version, config, environment, parity, peaks, privacy, weights = row
        return ResultSet(config=json.loads(config), environment=json.loads(environment),
                         runs=self._records(RunRecord, session_id), isobench_version=version, created_at=created,
                         session_id=session_id, parity=ParityResult.from_dicts(json.loads(parity)),
                         peaks=PeakRecord.from_dicts(json.loads(peaks)),
                         privacy=PrivacyRecord.from_dicts(json.loads(privacy)),
                         deploys=self._records(DeployRecord, session_id), weights=json.loads(weights),
                         loads=self._records(LoadRecord, session_id))

    def _records(self, kind: type, session_id: int) -> list:
        """The session's records of one type (its table), in plan order."""
        table, columns, json_columns = _table(kind)
        quoted = ", ".join(f'"{c}"' for c in columns)
        out = []
        for values in self.conn.execute(f'SELECT {quoted} FROM {table} WHERE session_id = ? ORDER BY "order", id',
                                        (session_id,)):
            d = dict(zip(columns, values))
            d.update({c: json.loads(d[c]) if d[c] is not None else None for c in json_columns})
            out.append(kind.from_dict(d))
        return out

    def status(self, session_id: int) -> str:
        """running, finished, interrupted or failed (isobench itself raised)."""
        return self.conn.execute("SELECT status FROM sessions WHERE id = ?", (session_id,)).fetchone()[0]

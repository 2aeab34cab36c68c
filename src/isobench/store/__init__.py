"""Keeping results: the SQLite results database, tidy exports, and comparing two stored sessions.

Reads and writes only the result model (:mod:`isobench.results`); the CLI is the only layer that persists.
"""
from .db import DB_ENV, DEFAULT_DB, SCHEMA_VERSION, SessionInfo, Store, default_db_path, open_store

__all__ = ["DB_ENV", "DEFAULT_DB", "SCHEMA_VERSION", "SessionInfo", "Store", "default_db_path", "open_store"]

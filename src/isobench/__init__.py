"""isobench: train the same workload in PyTorch, TensorFlow and JAX, measured honestly.

The public API, for scripts and notebooks (the command line calls the same functions)::

    from isobench import RunConfig, open_store, render_results, run_benchmark

:class:`RunConfig` and :class:`DeployConfig` configure a session (their defaults are the command line's);
:func:`run_benchmark` runs one of either kind, checked first, and returns its :class:`ResultSet` (:func:`run_session`
returns the whole :class:`~isobench.runner.Session`, for a store, a JSON file, a watcher or ``--resume``);
:func:`summarize` gives a training session's statistics; :func:`open_store` (or :class:`Store`) the results database;
:func:`render_results`, :func:`write_html` and :func:`write_markdown` its reports. Names are imported from their
module on first use (:mod:`isobench._lazy`): a worker process importing ``isobench.x`` loads none of them."""
from ._lazy import lazy_exports

__version__ = "0.1.0"
_EXPORTS = {"RunConfig": ".config", "DeployConfig": ".config", "run_benchmark": ".runner.session",
            "run_session": ".runner.session", "ResultSet": ".results", "summarize": ".stats", "Store": ".store",
            "open_store": ".store", "render_results": ".report.sessions", "write_html": ".report.html",
            "write_markdown": ".report.markdown"}
__getattr__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS) + ["__version__"]

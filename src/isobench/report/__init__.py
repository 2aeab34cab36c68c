"""Reports: pure functions from results and summaries to text."""
from .terminal import render_failures, render_table, render_verdict

__all__ = ["render_failures", "render_table", "render_verdict"]

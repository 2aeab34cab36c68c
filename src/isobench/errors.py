"""Errors that isobench reports to the user as one line (exit code 2), never as a traceback."""


class UserError(Exception):
    """A problem with the user's input or environment: bad flag, unknown workload, unreadable file."""

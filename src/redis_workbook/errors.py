"""Errors the workbook raises on purpose, each carrying the fix in its message.

They subclass RuntimeError so a notebook shows them as one readable line
instead of a redis-py traceback ten frames deep.
"""


class WorkbookError(RuntimeError):
    """Base of every error that explains how to fix the setup."""


class RedisUnavailable(WorkbookError):
    """No Redis answered where we looked."""


class SearchModuleMissing(WorkbookError):
    """Redis answered but has no query engine (no `search` module)."""


class EmbeddedServerUnavailable(WorkbookError):
    """The embedded server's binaries are not installed for this platform."""

"""Exception hierarchy for iomt-twin.

Every message names the bad value, what was expected, and how to fix it.
"""

from __future__ import annotations

__all__ = [
    "TwinError",
    "ConfigError",
    "InputFormatError",
    "StoreError",
    "SnapshotNotFound",
    "DeviceNotFound",
    "ScopeError",
    "ReportError",
    "DeliveryError",
    "LockHeldError",
    "CycleError",
]


class TwinError(Exception):
    """Base class of every error raised by iomt-twin."""


class ConfigError(TwinError):
    """A site configuration file is missing or invalid."""


class InputFormatError(TwinError):
    """A discovery file cannot be read at all (as opposed to one bad record).

    Parameters
    ----------
    path : str
        The file that failed.
    message : str
        What was expected and what to do.
    line : int, optional
        1-based line number, when the failure sits on one line.
    offset : int, optional
        Byte offset, for binary formats.
    field : str, optional
        The field or column that failed.
    """

    def __init__(self, path, message, *, line=None, offset=None, field=None):
        self.path = str(path)
        self.line = line
        self.offset = offset
        self.field = field
        self.message = message
        where = self.path
        if line is not None:
            where += f":{line}"
        if offset is not None:
            where += f" (offset {offset})"
        if field:
            where += f" field {field!r}"
        super().__init__(f"{where}: {message}")


class StoreError(TwinError):
    """The workspace or graph store cannot be opened, read or written."""


class SnapshotNotFound(StoreError):
    """No snapshot matches the requested id."""


class DeviceNotFound(TwinError):
    """No device matches the requested id, address or name."""


class ScopeError(TwinError):
    """A target lies outside the site's configured discovery scope."""


class ReportError(TwinError):
    """A report file cannot be rendered (for example a PDF without Chromium)."""


class DeliveryError(TwinError):
    """A report cannot be delivered because its delivery settings are incomplete."""


class LockHeldError(TwinError):
    """Another report cycle holds the lock of the workspace."""


class CycleError(TwinError):
    """A step of a scheduled report cycle failed.

    Parameters
    ----------
    step : str
        The failed step (``build``, ``findings``, ``changes``, ``report``, ...).
    message : str
        What failed and what to do.
    run_id : str, optional
        Build run of the cycle, when the build had committed one.
    """

    def __init__(self, step, message, *, run_id=None):
        self.step = step
        self.run_id = run_id
        self.message = message
        super().__init__(f"report cycle failed at step {step!r}: {message}")

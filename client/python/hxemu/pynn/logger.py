"""``pynn.logger``: the part of pylogging that pynn_brainscales users call,
on top of Python's :mod:`logging`.

pynn_brainscales exports ``pylogging`` as ``logger``; notebooks use

>>> pynn.logger.default_config(level=pynn.logger.LogLevel.WARN)
>>> log = pynn.logger.get("my_experiment")
>>> pynn.logger.set_loglevel(log, pynn.logger.LogLevel.INFO)
>>> log.INFO("starting")          # also log.info(...)

Loggers are ``logging`` loggers of the same (dotted) name, wrapped with
pylogging's upper-case methods (TRACE, DEBUG, INFO, WARN, ERROR, FATAL).
"""

from __future__ import annotations

import enum
import logging
import sys
from typing import Optional

#: pylogging's TRACE is below DEBUG
TRACE = 5
logging.addLevelName(TRACE, "TRACE")


class LogLevel(enum.IntEnum):
    """pylogging's levels, as :mod:`logging` levels."""
    ALL = 0
    TRACE = TRACE
    DEBUG = logging.DEBUG
    INFO = logging.INFO
    WARN = logging.WARNING
    ERROR = logging.ERROR
    FATAL = logging.CRITICAL
    OFF = logging.CRITICAL + 10


def _level(level) -> int:
    if isinstance(level, str):
        try:
            return int(LogLevel[level.upper()])
        except KeyError:
            raise ValueError(f"unknown log level {level!r}; one of "
                             f"{', '.join(LogLevel.__members__)}") from None
    return int(level)


class Logger:
    """A :class:`logging.Logger` with pylogging's method names."""

    def __init__(self, logger: logging.Logger):
        self._logger = logger

    @property
    def name(self) -> str:
        return self._logger.name

    @property
    def logging_logger(self) -> logging.Logger:
        return self._logger

    def TRACE(self, *message):  # noqa: N802 - pylogging's names
        self._logger.log(TRACE, " ".join(map(str, message)))

    def DEBUG(self, *message):  # noqa: N802
        self._logger.debug(" ".join(map(str, message)))

    def INFO(self, *message):  # noqa: N802
        self._logger.info(" ".join(map(str, message)))

    def WARN(self, *message):  # noqa: N802
        self._logger.warning(" ".join(map(str, message)))

    def ERROR(self, *message):  # noqa: N802
        self._logger.error(" ".join(map(str, message)))

    def FATAL(self, *message):  # noqa: N802
        self._logger.critical(" ".join(map(str, message)))

    def __getattr__(self, name):  # info, warning, ... of logging.Logger
        return getattr(self._logger, name)

    def __repr__(self) -> str:
        return f"<hxemu.pynn.logger.Logger {self.name!r}>"


_FORMAT = "%(relativeCreated)8.0fms %(levelname)-5s %(name)s %(message)s"
_handlers = []


def get(name: str) -> Logger:
    """The logger ``name`` (dotted hierarchy, as pylogging)."""
    return Logger(logging.getLogger(name))


def get_root() -> Logger:
    return Logger(logging.getLogger())


def _logging_logger(logger) -> logging.Logger:
    if logger is None:
        return logging.getLogger()
    if isinstance(logger, Logger):
        return logger.logging_logger
    if isinstance(logger, str):
        return logging.getLogger(logger)
    return logger


def set_loglevel(logger, level) -> None:
    """Set the level of ``logger`` (a Logger, a name or None = root)."""
    _logging_logger(logger).setLevel(_level(level))


def _add_handler(handler: logging.Handler, logger=None) -> None:
    handler.setFormatter(logging.Formatter(_FORMAT))
    _logging_logger(logger).addHandler(handler)
    _handlers.append((handler, _logging_logger(logger)))


def append_to_cout(logger=None) -> None:
    """Log ``logger`` (default root) to stdout."""
    _add_handler(logging.StreamHandler(sys.stdout), logger)


def append_to_file(fname: str, logger=None) -> None:
    """Log ``logger`` (default root) to the file ``fname``."""
    _add_handler(logging.FileHandler(fname), logger)


def reset() -> None:
    """Remove the handlers added here and set the root level back to WARN."""
    while _handlers:
        handler, logger = _handlers.pop()
        logger.removeHandler(handler)
        handler.close()
    logging.getLogger().setLevel(logging.WARNING)


def default_config(level=LogLevel.WARN, fname: Optional[str] = "",
                   print_location: bool = False, color: bool = False,
                   date_format: str = "RELATIVE") -> None:
    # pylint: disable=unused-argument
    """pylogging's default_config: root level ``level``, output to stdout,
    or to the file ``fname`` if given. ``print_location``, ``color`` and
    ``date_format`` are accepted and ignored."""
    reset()
    set_loglevel(None, level)
    if fname:
        append_to_file(fname)
    else:
        append_to_cout()


__all__ = ["LogLevel", "Logger", "append_to_cout", "append_to_file", "default_config",
           "get", "get_root", "reset", "set_loglevel"]

"""Exceptions raised by the hxemu client.

Every error that comes from the server (a failed RPC or a failed job) is an
:class:`HxemuError` carrying the canonical status code and the server's
message, which names the offending field. Some codes additionally derive from
the matching built-in exception, so that ``except ValueError`` keeps working
for invalid experiments.
"""

from __future__ import annotations

from typing import Dict, Optional, Type

import grpc


class HxemuError(Exception):
    """An error reported by (or while talking to) the hxemu server.

    :ivar code: the :class:`grpc.StatusCode` of the failure.
    :ivar message: the server's message, without decoration.
    :ivar job_id: the job concerned, if any.
    """

    def __init__(self, message: str, code: grpc.StatusCode = grpc.StatusCode.UNKNOWN,
                 job_id: Optional[str] = None):
        self.code = code
        self.message = message
        self.job_id = job_id
        prefix = f"job {job_id}: " if job_id else ""
        super().__init__(f"{prefix}{message} [{code.name}]")


class InvalidArgumentError(HxemuError, ValueError):
    """The experiment or request is invalid (INVALID_ARGUMENT, OUT_OF_RANGE)."""


class NotFoundError(HxemuError, LookupError):
    """Unknown job id (NOT_FOUND)."""


class FailedPreconditionError(HxemuError, RuntimeError):
    """The request does not fit the job's state, e.g. the result of an
    unfinished job (FAILED_PRECONDITION)."""


class ResourceExhaustedError(HxemuError, RuntimeError):
    """Queue full, quota exceeded, experiment too large (RESOURCE_EXHAUSTED)."""


class UnavailableError(HxemuError, ConnectionError):
    """The server cannot be reached or is shutting down (UNAVAILABLE)."""


class DeadlineExceededError(HxemuError, TimeoutError):
    """A call or a wait ran out of time (DEADLINE_EXCEEDED)."""


class CancelledError(HxemuError):
    """The job or call was cancelled (CANCELLED)."""


class PermissionDeniedError(HxemuError, PermissionError):
    """Not allowed (PERMISSION_DENIED, UNAUTHENTICATED)."""


class UnimplementedError(HxemuError, NotImplementedError):
    """The server does not support the request, e.g. calibration targets the
    emulator cannot calibrate (UNIMPLEMENTED)."""


class JobExpiredError(HxemuError):
    """The job's result is no longer kept by the server."""


_BY_CODE: Dict[grpc.StatusCode, Type[HxemuError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgumentError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.CANCELLED: CancelledError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.UNAUTHENTICATED: PermissionDeniedError,
    grpc.StatusCode.UNIMPLEMENTED: UnimplementedError,
}

_CODE_BY_VALUE = {code.value[0]: code for code in grpc.StatusCode}


def status_code_from_int(value: int) -> grpc.StatusCode:
    """Canonical status code (google.rpc.Code numbering) -> grpc.StatusCode."""
    return _CODE_BY_VALUE.get(int(value), grpc.StatusCode.UNKNOWN)


def error_for(code: grpc.StatusCode, message: str,
              job_id: Optional[str] = None) -> HxemuError:
    """The HxemuError subclass instance for ``code``."""
    return _BY_CODE.get(code, HxemuError)(message, code, job_id)

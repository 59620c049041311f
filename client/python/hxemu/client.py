"""Low-level client of the hxemu ``ExperimentService``.

>>> client = Client()                     # HXEMU_ADDRESS, else embedded server
>>> job = client.submit(experiment)       # hxemu.v1.Experiment
>>> job = client.wait(job.job_id)
>>> result = client.result(job.job_id)    # hxemu.v1.Result, chunks merged

Jobs and results are the generated protobuf messages (``hxemu.v1``). gRPC
failures are raised as :class:`hxemu.errors.HxemuError` subclasses carrying the
status code and the server's message.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Iterable, Iterator, List, Optional

import grpc

from hxemu._proto import experiment_pb2, service_pb2, service_pb2_grpc
from hxemu.errors import (DeadlineExceededError, HxemuError, JobExpiredError,
                          error_for, status_code_from_int)

#: Largest message the client accepts / sends (results are also chunked).
MAX_MESSAGE_BYTES = 512 * 1024 * 1024
#: Default deadline of a single unary call [s].
DEFAULT_CALL_TIMEOUT = 30.0
#: Longest single WaitJob call; longer waits are split into several calls [s].
WAIT_SLICE = 60.0

TERMINAL_STATES = frozenset({
    service_pb2.JOB_STATE_SUCCEEDED,
    service_pb2.JOB_STATE_FAILED,
    service_pb2.JOB_STATE_CANCELLED,
    service_pb2.JOB_STATE_EXPIRED,
})

Job = service_pb2.Job
Result = experiment_pb2.Result


def default_user() -> str:
    """The user name sent in the ``hxemu-user`` metadata.

    ``QUIGGELDY_USER_NO_MUNGE`` (as for quiggeldy), ``HXEMU_USER``, ``USER``,
    else "anonymous".
    """
    for variable in ("QUIGGELDY_USER_NO_MUNGE", "HXEMU_USER", "USER"):
        value = os.environ.get(variable)
        if value:
            return value
    return "anonymous"


def default_token() -> Optional[str]:
    """The bearer token sent as ``authorization: Bearer <token>`` metadata:
    ``HXEMU_TOKEN``, else quiggeldy's ``QUIGGELDY_TOKEN``, else None."""
    for variable in ("HXEMU_TOKEN", "QUIGGELDY_TOKEN"):
        value = os.environ.get(variable, "").strip()
        if value:
            return value
    return None


def _truthy(value: Optional[str]) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def configured_address() -> Optional[str]:
    """The server address from the environment, or None (= embedded server).

    ``HXEMU_ADDRESS=host:port`` wins. Otherwise quiggeldy's variables are
    understood as aliases, so that BrainScaleS-2 set-ups work unchanged:
    ``QUIGGELDY_ENABLED=1`` with ``QUIGGELDY_IP`` and ``QUIGGELDY_PORT``
    (both required then, as in hxcomm).
    """
    address = os.environ.get("HXEMU_ADDRESS", "").strip()
    if address:
        return address
    if not _truthy(os.environ.get("QUIGGELDY_ENABLED")):
        return None
    host = os.environ.get("QUIGGELDY_IP", "").strip()
    port = os.environ.get("QUIGGELDY_PORT", "").strip()
    for name, value in (("QUIGGELDY_IP", host), ("QUIGGELDY_PORT", port)):
        if not value:
            raise ValueError(f"QUIGGELDY_ENABLED is set but {name} is not set "
                             "and was not explicitly provided (or set "
                             "HXEMU_ADDRESS=host:port)")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"QUIGGELDY_PORT={port!r}: must be a port number in "
                         "[1, 65535]")
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # IPv6 literal
    return f"{host}:{port}"


def default_address() -> str:
    """The configured address (:func:`configured_address`), else the
    embedded server's (started on demand)."""
    address = configured_address()
    if address:
        return address
    from hxemu._server import embedded_server
    return embedded_server().address


def state_name(state: int) -> str:
    """``JOB_STATE_SUCCEEDED`` -> ``"SUCCEEDED"``."""
    return service_pb2.JobState.Name(state).replace("JOB_STATE_", "")


def merge_result_chunks(chunks: Iterable[service_pb2.ResultChunk]) -> experiment_pb2.Result:
    """Merge a GetResult stream into one Result.

    Traces with the same (population, neuron, observable) and spike trains
    with the same (population, neuron) are concatenated in stream order;
    CADC reads are appended in stream order; every other field (chip id,
    runtime, population labels, CADC circuits, ...) comes from the first chunk.
    """
    merged = experiment_pb2.Result()
    traces = {}
    trains = {}
    have_header = False
    for chunk in chunks:
        part = chunk.result
        if not have_header:
            # The first chunk carries every field but the bulk lists.
            merged.CopyFrom(part)
            del merged.spike_trains[:]
            del merged.traces[:]
            del merged.cadc_reads[:]
            have_header = True
        merged.cadc_reads.extend(part.cadc_reads)
        for train in part.spike_trains:
            key = (train.population, train.neuron)
            if key in trains:
                trains[key].times_ticks.extend(train.times_ticks)
            else:
                trains[key] = merged.spike_trains.add()
                trains[key].CopyFrom(train)
        for trace in part.traces:
            key = (trace.population, trace.neuron, trace.observable)
            if key in traces:
                traces[key].times_ticks.extend(trace.times_ticks)
                traces[key].codes.extend(trace.codes)
            else:
                traces[key] = merged.traces.add()
                traces[key].CopyFrom(trace)
    return merged


class Client:
    """Connection to one hxemu server.

    :param address: ``host:port``; default ``HXEMU_ADDRESS``, else the embedded
        server (a private ``hxemu-server`` process, see :mod:`hxemu._server`).
    :param user: name sent as ``hxemu-user`` metadata (default
        :func:`default_user`).
    :param token: bearer token sent as ``authorization: Bearer <token>``
        metadata (default :func:`default_token`: ``HXEMU_TOKEN``, else
        ``QUIGGELDY_TOKEN``; none if unset).
    :param call_timeout: deadline of each unary call [s].
    """

    def __init__(self, address: Optional[str] = None, *, user: Optional[str] = None,
                 token: Optional[str] = None,
                 call_timeout: float = DEFAULT_CALL_TIMEOUT):
        self.address = address or default_address()
        self.user = user or default_user()
        self.token = token or default_token()
        self.call_timeout = call_timeout
        self._channel = grpc.insecure_channel(self.address, options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ])
        self._stub = service_pb2_grpc.ExperimentServiceStub(self._channel)

    def __repr__(self) -> str:
        return f"hxemu.Client({self.address!r}, user={self.user!r})"

    # -- plumbing -------------------------------------------------------------

    @property
    def _metadata(self):
        metadata = [("hxemu-user", self.user)]
        if self.token:
            metadata.append(("authorization", f"Bearer {self.token}"))
        return tuple(metadata)

    def _error(self, err: grpc.RpcError, method: str,
               job_id: Optional[str] = None) -> HxemuError:
        code = err.code() if callable(getattr(err, "code", None)) else None
        details = err.details() if callable(getattr(err, "details", None)) else None
        code = code or grpc.StatusCode.UNKNOWN
        details = details or str(err)
        if code == grpc.StatusCode.UNAVAILABLE:
            details = f"cannot reach the hxemu server at {self.address}: {details}"
        else:
            details = f"{method}: {details}"
        return error_for(code, details, job_id)

    def _call(self, method: str, request, timeout: Optional[float] = None,
              job_id: Optional[str] = None):
        try:
            return getattr(self._stub, method)(
                request, timeout=self.call_timeout if timeout is None else timeout,
                metadata=self._metadata)
        except grpc.RpcError as err:
            raise self._error(err, method, job_id) from None

    # -- the API --------------------------------------------------------------

    def submit(self, experiment: experiment_pb2.Experiment,
               request_id: Optional[str] = None) -> service_pb2.Job:
        """Queue ``experiment``; returns the new job at once.

        ``request_id`` makes retries idempotent; a random one is used if None.
        """
        request = service_pb2.SubmitJobRequest(
            experiment=experiment, request_id=request_id or str(uuid.uuid4()))
        return self._call("SubmitJob", request)

    def get(self, job_id: str) -> service_pb2.Job:
        """The current view of a job."""
        return self._call("GetJob", service_pb2.GetJobRequest(job_id=job_id),
                          job_id=job_id)

    def wait(self, job_id: str, timeout: Optional[float] = None) -> service_pb2.Job:
        """Block until the job is in a terminal state and return it.

        :param timeout: seconds; None waits forever. On expiry a
            :class:`~hxemu.errors.DeadlineExceededError` (a TimeoutError) is
            raised; the job keeps running.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        request = service_pb2.WaitJobRequest(job_id=job_id)
        while True:
            remaining = WAIT_SLICE if deadline is None else deadline - time.monotonic()
            if remaining <= 0:
                raise DeadlineExceededError(
                    f"WaitJob: job not finished after {timeout:g} s",
                    grpc.StatusCode.DEADLINE_EXCEEDED, job_id)
            try:
                job = self._stub.WaitJob(request, timeout=min(remaining, WAIT_SLICE),
                                         metadata=self._metadata)
            except grpc.RpcError as err:
                if err.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                    continue
                if err.code() == grpc.StatusCode.UNIMPLEMENTED:
                    return self._poll(job_id, deadline, timeout)
                raise self._error(err, "WaitJob", job_id) from None
            if job.state in TERMINAL_STATES:
                return job

    def _poll(self, job_id, deadline, timeout) -> service_pb2.Job:
        delay = 0.01
        while True:
            job = self.get(job_id)
            if job.state in TERMINAL_STATES:
                return job
            if deadline is not None and time.monotonic() + delay > deadline:
                raise DeadlineExceededError(
                    f"GetJob: job not finished after {timeout:g} s",
                    grpc.StatusCode.DEADLINE_EXCEEDED, job_id)
            time.sleep(delay)
            delay = min(delay * 2, 1.0)

    def watch(self, job_id: str, poll_interval: float = 0.1) -> Iterator[service_pb2.Job]:
        """Views of a job until (and including) its terminal one.

        Uses the ``WatchJob`` stream; a server without it (UNIMPLEMENTED)
        is polled with ``GetJob`` every ``poll_interval`` seconds instead.
        Stopping the iteration early cancels the stream, not the job.
        """
        request_type = getattr(service_pb2, "WatchJobRequest", None)
        method = getattr(self._stub, "WatchJob", None)
        if request_type is not None and method is not None:
            stream = method(request_type(job_id=job_id), metadata=self._metadata)
            seen_any = False
            try:
                for job in stream:
                    seen_any = True
                    yield job
                    if job.state in TERMINAL_STATES:
                        return
                if seen_any:
                    raise error_for(grpc.StatusCode.UNAVAILABLE,
                                    "WatchJob: stream ended before the job finished",
                                    job_id)
            except grpc.RpcError as err:
                if err.code() != grpc.StatusCode.UNIMPLEMENTED or seen_any:
                    raise self._error(err, "WatchJob", job_id) from None
            finally:
                stream.cancel()
        # older server: poll
        while True:
            job = self.get(job_id)
            yield job
            if job.state in TERMINAL_STATES:
                return
            time.sleep(poll_interval)

    def cancel(self, job_id: str) -> service_pb2.Job:
        """Cancel a queued or running job (no-op for finished jobs)."""
        return self._call("CancelJob", service_pb2.CancelJobRequest(job_id=job_id),
                          job_id=job_id)

    def result(self, job_id: str, timeout: Optional[float] = None) -> experiment_pb2.Result:
        """The full result of a SUCCEEDED job (all streamed chunks merged)."""
        request = service_pb2.GetResultRequest(job_id=job_id)
        try:
            stream = self._stub.GetResult(request, timeout=timeout,
                                          metadata=self._metadata)
            return merge_result_chunks(stream)
        except grpc.RpcError as err:
            raise self._error(err, "GetResult", job_id) from None

    def list_jobs(self, limit: Optional[int] = None,
                  page_size: int = 100) -> List[service_pb2.Job]:
        """The caller's jobs, newest first (all pages, at most ``limit``)."""
        jobs: List[service_pb2.Job] = []
        token = ""
        while limit is None or len(jobs) < limit:
            size = page_size if limit is None else min(page_size, limit - len(jobs))
            page = self._call("ListJobs", service_pb2.ListJobsRequest(
                page_size=size, page_token=token))
            jobs.extend(page.jobs)
            token = page.next_page_token
            if not token or not page.jobs:
                break
        return jobs if limit is None else jobs[:limit]

    def chips(self) -> List[service_pb2.ChipInfo]:
        """The server's emulated chips (busy, queued jobs, calibration state)."""
        return list(self._call("ListChips", service_pb2.ListChipsRequest()).chips)

    def calibration(self, chip_id: Optional[int] = None, targets=None,
                    timeout: Optional[float] = None):
        """The server's calibration (``hxemu.v1.Calibration``) of ``chip_id``
        (None: the server picks one) for ``targets`` (a
        ``hxemu.v1.CalibrationTargets``; None: the defaults). The server
        computes it on the first request and then serves it from its cache,
        so the first call may take a while (``timeout`` [s], default 1 h).
        """
        request_type = getattr(service_pb2, "GetCalibrationRequest", None)
        if request_type is None:
            raise NotImplementedError(
                "this hxemu client was generated without the GetCalibration "
                "RPC (rebuild the Python protos of a newer hxemu)")
        request = request_type()
        if chip_id is not None:
            request.chip_id = int(chip_id)
        if targets is not None:
            request.targets.CopyFrom(targets)
        return self._call("GetCalibration", request, timeout=timeout or 3600.0)

    def server_info(self) -> service_pb2.ServerInfo:
        """Version, chips, limits and the neuron parameter table of the server."""
        return self._call("GetServerInfo", service_pb2.GetServerInfoRequest())

    def run(self, experiment: experiment_pb2.Experiment,
            timeout: Optional[float] = None) -> experiment_pb2.Result:
        """Submit, wait and fetch: the Result, or the job's error raised."""
        job = self.submit(experiment)
        job = self.wait(job.job_id, timeout=timeout)
        raise_for_job(job)
        return self.result(job.job_id)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def raise_for_job(job: service_pb2.Job) -> None:
    """Raise the matching HxemuError unless ``job`` SUCCEEDED."""
    if job.state == service_pb2.JOB_STATE_SUCCEEDED:
        return
    reason = job.error.message or job.state_reason or state_name(job.state).lower()
    if job.state == service_pb2.JOB_STATE_FAILED:
        code = status_code_from_int(job.error.code) if job.error.code else \
            grpc.StatusCode.UNKNOWN
        raise error_for(code, f"experiment failed: {reason}", job.job_id)
    if job.state == service_pb2.JOB_STATE_CANCELLED:
        raise error_for(grpc.StatusCode.CANCELLED, f"job cancelled: {reason}", job.job_id)
    if job.state == service_pb2.JOB_STATE_EXPIRED:
        raise JobExpiredError(f"job expired: {reason}", grpc.StatusCode.NOT_FOUND,
                              job.job_id)
    raise HxemuError(f"job is {state_name(job.state)}, not finished: {reason}",
                     grpc.StatusCode.FAILED_PRECONDITION, job.job_id)


__all__ = ["Client", "Job", "Result", "TERMINAL_STATES", "configured_address",
           "default_address", "default_token", "default_user", "merge_result_chunks", "raise_for_job", "state_name"]

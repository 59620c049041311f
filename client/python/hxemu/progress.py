"""Waiting for a job, with an optional tqdm progress bar.

The bar shows the emulated hardware time done (``Job.progress_ms``) of
``Job.runtime_ms``. It appears only for runs that take longer than
:data:`BAR_DELAY` seconds, and only when wanted: ``show=True``, or
``show=None`` (default) with ``HXEMU_PROGRESS=1`` or stderr being a terminal
(``HXEMU_PROGRESS=0`` switches it off).

Job updates come from :func:`job_updates`: ``client.watch(job_id)`` when the
client has it (:meth:`hxemu.Client.watch`: the ``WatchJob`` stream, itself
falling back to polling on servers without it), else ``GetJob`` polling.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Iterator, Optional

from hxemu._proto import service_pb2

#: environment variable: "1" forces the bar on, "0" off
ENV_VARIABLE = "HXEMU_PROGRESS"
#: seconds a job must run before the bar appears
BAR_DELAY = 0.5
#: polling interval of GetJob while a bar is shown [s]
POLL_INTERVAL = 0.1

_TERMINAL = frozenset({
    service_pb2.JOB_STATE_SUCCEEDED, service_pb2.JOB_STATE_FAILED,
    service_pb2.JOB_STATE_CANCELLED, service_pb2.JOB_STATE_EXPIRED,
})


def want_bar(show: Optional[bool] = None, stream=None) -> bool:
    """Whether to show a bar: ``show`` if given, else ``HXEMU_PROGRESS``,
    else whether ``stream`` (default stderr) is a terminal."""
    if show is not None:
        return bool(show)
    value = os.environ.get(ENV_VARIABLE, "").strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # closed stream
        return False


def job_updates(client, job_id: str, poll_interval: float = POLL_INTERVAL,
                timeout: Optional[float] = None) -> Iterator[service_pb2.Job]:
    """Job views until (and including) the terminal one.

    Uses ``client.watch(job_id)`` if the client has it (streaming), else
    polls ``client.get(job_id)`` every ``poll_interval`` seconds.
    """
    watch = getattr(client, "watch", None)
    if callable(watch):
        yield from watch(job_id)
        return
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        job = client.get(job_id)
        yield job
        if job.state in _TERMINAL:
            return
        if deadline is not None and time.monotonic() > deadline:
            from hxemu.errors import DeadlineExceededError
            import grpc
            raise DeadlineExceededError(f"GetJob: job not finished after {timeout:g} s",
                                        grpc.StatusCode.DEADLINE_EXCEEDED, job_id)
        time.sleep(poll_interval)


def _describe(job) -> str:
    if job.state == service_pb2.JOB_STATE_QUEUED:
        return f"queued ({job.queue_position} ahead)" if job.queue_position else "queued"
    return service_pb2.JobState.Name(job.state).replace("JOB_STATE_", "").lower()


def wait_with_progress(client, job, *, show: Optional[bool] = None, file=None,
                       description: str = "hxemu", poll_interval: float = POLL_INTERVAL,
                       delay: Optional[float] = None) -> service_pb2.Job:
    """Wait until ``job`` (a Job view) is terminal and return its last view.

    Without a bar this is ``client.wait`` (blocking WaitJob); with one, the
    bar follows :func:`job_updates`.
    """
    file = sys.stderr if file is None else file
    if not want_bar(show, file):
        return client.wait(job.job_id)
    from tqdm import tqdm
    delay = BAR_DELAY if delay is None else delay
    total = job.runtime_ms or None
    last = job
    begin = time.monotonic()
    with tqdm(total=total, unit="ms", desc=description, file=file, delay=delay,
              leave=False, dynamic_ncols=True,
              bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.3g}/{total:.3g} "
                         "ms hw [{elapsed}<{remaining}{postfix}]") as bar:
        for last in job_updates(client, job.job_id, poll_interval):
            if last.runtime_ms and bar.total != last.runtime_ms:
                bar.total = last.runtime_ms
            done = min(last.progress_ms, bar.total or last.progress_ms)
            if done > bar.n:
                bar.update(done - bar.n)
            bar.set_postfix_str(_describe(last), refresh=False)
            if time.monotonic() - begin >= delay:
                bar.refresh()
    return last


__all__ = ["BAR_DELAY", "ENV_VARIABLE", "job_updates", "wait_with_progress", "want_bar"]

"""hxemu.progress: when the bar shows, what feeds it, and the pynn wiring."""

import io

import pytest

from hxemu import progress
from hxemu._proto import service_pb2
from hxemu.errors import DeadlineExceededError

S = service_pb2


def job(state, done=0.0, position=0):
    return S.Job(job_id="j1", state=state, progress_ms=done, runtime_ms=20.0,
                 queue_position=position)


class ScriptedClient:
    """GetJob answers from a script; records which calls were made."""

    def __init__(self, views):
        self.views = list(views)
        self.calls = []

    def get(self, job_id):
        self.calls.append(("get", job_id))
        return self.views.pop(0) if len(self.views) > 1 else self.views[0]

    def wait(self, job_id):
        self.calls.append(("wait", job_id))
        return self.views[-1]


SCRIPT = [job(S.JOB_STATE_QUEUED, position=2), job(S.JOB_STATE_RUNNING, 5.0),
          job(S.JOB_STATE_RUNNING, 15.0), job(S.JOB_STATE_SUCCEEDED, 20.0)]


class Tty(io.StringIO):
    def isatty(self):
        return True


class Closed(io.StringIO):
    def isatty(self):
        raise ValueError("I/O operation on closed file")


@pytest.mark.parametrize("show, env, stream, expected", [
    (True, None, io.StringIO(), True),
    (False, "1", Tty(), False),
    (None, "1", io.StringIO(), True),
    (None, "0", Tty(), False),
    (None, None, Tty(), True),
    (None, None, io.StringIO(), False),
    (None, None, Closed(), False),
    (None, None, object(), False),
])
def test_want_bar(monkeypatch, show, env, stream, expected):
    if env is None:
        monkeypatch.delenv(progress.ENV_VARIABLE, raising=False)
    else:
        monkeypatch.setenv(progress.ENV_VARIABLE, env)
    assert progress.want_bar(show, stream) is expected


def test_bar_follows_polled_progress():
    client = ScriptedClient(SCRIPT)
    out = io.StringIO()
    last = progress.wait_with_progress(client, SCRIPT[0], show=True, file=out,
                                       poll_interval=0, delay=0, description="run")
    assert last.state == S.JOB_STATE_SUCCEEDED
    assert [c[0] for c in client.calls] == ["get"] * 4
    text = out.getvalue()
    assert "run:" in text and "queued (2 ahead)" in text
    assert "5/20 ms hw" in text and "20/20 ms hw" in text and "succeeded" in text


def test_no_bar_blocks_in_wait_job():
    client = ScriptedClient(SCRIPT)
    out = io.StringIO()
    last = progress.wait_with_progress(client, SCRIPT[0], show=False, file=out)
    assert last.state == S.JOB_STATE_SUCCEEDED
    assert client.calls == [("wait", "j1")] and out.getvalue() == ""


def test_short_jobs_show_no_bar():
    out = io.StringIO()
    progress.wait_with_progress(ScriptedClient(SCRIPT), SCRIPT[0], show=True, file=out,
                                poll_interval=0, delay=60)
    assert "ms hw" not in out.getvalue()


def test_streaming_watch_is_preferred():
    class Watching(ScriptedClient):
        def watch(self, job_id):
            self.calls.append(("watch", job_id))
            yield from SCRIPT

    client = Watching(SCRIPT)
    views = list(progress.job_updates(client, "j1"))
    assert [v.state for v in views] == [v.state for v in SCRIPT]
    assert client.calls == [("watch", "j1")]


def test_polling_timeout():
    client = ScriptedClient([job(S.JOB_STATE_RUNNING, 1.0)])
    with pytest.raises(DeadlineExceededError, match="not finished after"):
        list(progress.job_updates(client, "j1", poll_interval=0.01, timeout=0.05))


@pytest.mark.parametrize("setting, env, shown", [(True, None, True), (None, "1", True),
                                                 (False, "1", False), (None, "0", False)])
def test_pynn_runs_show_the_bar(pynn, monkeypatch, capfd, setting, env, shown):
    monkeypatch.setattr(progress, "BAR_DELAY", 0.0)
    if env is None:
        monkeypatch.delenv(progress.ENV_VARIABLE, raising=False)
    else:
        monkeypatch.setenv(progress.ENV_VARIABLE, env)
    pynn.setup(progress=setting)
    pop = pynn.Population(1, pynn.cells.HXNeuron(leak_v_leak=700, leak_i_bias=1022))
    pop.record("spikes")
    pynn.run(2.0)
    err = capfd.readouterr().err
    assert ("hxemu run" in err) is shown, err
    assert pynn.get_current_time() == pytest.approx(2.0)


# -- hxemu.Client.watch: the WatchJob stream, polling on older servers ---------------

def _experiment(runtime_ms=2.0):
    from hxemu._proto import experiment_pb2 as pb
    experiment = pb.Experiment(runtime_ms=runtime_ms, seed=1)
    experiment.populations.add(size=1, cell_type=pb.CELL_TYPE_HX_NEURON)
    experiment.recordings.add(population=0, observable=pb.OBSERVABLE_V)
    return experiment


def test_watch_streams_from_the_server(server_address):
    import hxemu
    with hxemu.Client(server_address) as client:
        submitted = client.submit(_experiment())
        views = list(client.watch(submitted.job_id))
        assert views[-1].state == S.JOB_STATE_SUCCEEDED
        assert all(v.state not in (S.JOB_STATE_SUCCEEDED, S.JOB_STATE_FAILED)
                   for v in views[:-1])
        done = [v.progress_ms for v in views]
        assert done == sorted(done) and done[-1] == pytest.approx(2.0)
        with pytest.raises(hxemu.NotFoundError, match="WatchJob"):
            list(client.watch("no-such-job"))


def test_watch_polls_a_server_without_watch_job(fake_server):
    import hxemu
    with hxemu.Client(fake_server.address) as client:
        submitted = client.submit(_experiment())
        views = list(client.watch(submitted.job_id))
        assert [v.state for v in views] == [S.JOB_STATE_SUCCEEDED]


def test_watch_stream_ending_early_is_an_error(fake_server):
    import hxemu

    class Stream:
        cancelled = False

        def __iter__(self):
            yield job(S.JOB_STATE_RUNNING, 1.0)

        def cancel(self):
            Stream.cancelled = True

    with hxemu.Client(fake_server.address) as client:
        client._stub = type("Stub", (), {"WatchJob": lambda self, *a, **k: Stream()})()
        updates = client.watch("j1")
        assert next(updates).state == S.JOB_STATE_RUNNING
        with pytest.raises(hxemu.UnavailableError, match="stream ended before"):
            next(updates)
        assert Stream.cancelled


def test_bar_uses_the_stream(server_address, monkeypatch):
    import hxemu
    calls = []
    original = hxemu.Client.watch

    def spy(self, job_id, *args, **kwargs):
        calls.append(job_id)
        return original(self, job_id, *args, **kwargs)

    monkeypatch.setattr(hxemu.Client, "watch", spy)
    out = io.StringIO()
    with hxemu.Client(server_address) as client:
        submitted = client.submit(_experiment(5.0))
        last = progress.wait_with_progress(client, submitted, show=True, file=out, delay=0)
    assert last.state == S.JOB_STATE_SUCCEEDED and calls == [submitted.job_id]
    assert "5/5 ms hw" in out.getvalue()


_LONG_RUN = """
import hxemu.pynn as pynn
pynn.setup(progress=False)
pop = pynn.Population(512, pynn.cells.HXNeuron(leak_v_leak=700, leak_i_bias=500))
pop.record("spikes")
try:
    pynn.run(5000.0)
except KeyboardInterrupt:
    print("interrupted", pynn.simulator.state.last_job.job_id, flush=True)
    raise SystemExit(3)
"""


def test_ctrl_c_cancels_the_job_on_the_server(server_address, tmp_path):
    """SIGINT during pynn.run(): KeyboardInterrupt in the script, and the
    job is CANCELLED on the server (not left running)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import hxemu
    from hxemu._proto import service_pb2
    user = f"ctrl-c-{os.getpid()}"
    script = tmp_path / "long_run.py"
    script.write_text(_LONG_RUN)
    env = dict(os.environ, HXEMU_ADDRESS=server_address, USER=user,
               HXEMU_USER=user, QUIGGELDY_USER_NO_MUNGE=user)
    process = subprocess.Popen([sys.executable, str(script)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with hxemu.Client(server_address, user=user) as client:
        try:
            for _ in range(600):  # until the job runs (at most 60 s)
                jobs = client.list_jobs(limit=1)
                if jobs and jobs[0].state == service_pb2.JOB_STATE_RUNNING:
                    break
                assert process.poll() is None, process.communicate()
                time.sleep(0.1)
            process.send_signal(signal.SIGINT)
            out, err = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
        assert process.returncode == 3, err
        job_id = out.split()[-1]
        job = client.wait(job_id, timeout=30)
    assert job.state == service_pb2.JOB_STATE_CANCELLED, job
    assert job.progress_ms < job.runtime_ms


def test_ctrl_c_during_submit_cancels_the_job(pynn, server_address, monkeypatch):
    """The interrupt arrives after the server took the job, before the client
    has its reply (the race of the test above): the job is found by its
    request_id and cancelled, not left running unseen."""
    import hxemu
    real_submit = hxemu.Client.submit
    request_ids = []

    def submit_then_interrupt(self, experiment, request_id=None):
        request_ids.append(request_id)
        job = real_submit(self, experiment, request_id=request_id)
        if len(request_ids) == 1:
            raise KeyboardInterrupt
        return job

    monkeypatch.setattr(hxemu.Client, "submit", submit_then_interrupt)
    pynn.setup(progress=False)
    pop = pynn.Population(512, pynn.cells.HXNeuron(leak_v_leak=700, leak_i_bias=500))
    pop.record("spikes")
    with pytest.raises(KeyboardInterrupt):
        pynn.run(5000.0)
    job = pynn.simulator.state.last_job
    assert job is not None
    assert len(request_ids) == 2 and request_ids[0] == request_ids[1] is not None
    with hxemu.Client(server_address) as client:
        job = client.wait(job.job_id, timeout=30)
    assert job.state == service_pb2.JOB_STATE_CANCELLED, job
    assert job.progress_ms < job.runtime_ms

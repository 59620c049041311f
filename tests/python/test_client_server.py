"""hxemu.Client against the real server: job life cycle, table, errors."""

import pytest

import hxemu
from hxemu import _parameters
from hxemu._proto import experiment_pb2, service_pb2
from hxemu.client import state_name


def _experiment(runtime_ms=0.1):
    experiment = experiment_pb2.Experiment(runtime_ms=runtime_ms, seed=42)
    population = experiment.populations.add(label="n", size=1,
                                            cell_type=experiment_pb2.CELL_TYPE_HX_NEURON)
    population.parameters.add(name="leak_v_leak", values=[700])
    population.parameters.add(name="leak_i_bias", values=[1022])
    experiment.recordings.add(population=0, observable=experiment_pb2.OBSERVABLE_V)
    return experiment


@pytest.fixture
def client(server_address):
    with hxemu.Client(server_address) as c:
        yield c


def test_parameter_table_matches_server(client):
    """The generated JSON the client uses is the server's table."""
    info = client.server_info()
    assert info.num_chips >= 1 and info.max_runtime_ms > 0
    assert _parameters.from_server_info(info) == _parameters.neuron_parameters()


def test_job_life_cycle(client):
    job = client.submit(_experiment())
    assert job.job_id
    assert job.state in (service_pb2.JOB_STATE_QUEUED, service_pb2.JOB_STATE_RUNNING,
                         service_pb2.JOB_STATE_SUCCEEDED)
    done = client.wait(job.job_id, timeout=60)
    assert state_name(done.state) == "SUCCEEDED"
    assert client.get(job.job_id).state == service_pb2.JOB_STATE_SUCCEEDED
    result = client.result(job.job_id)
    assert result.runtime_ms == pytest.approx(0.1)
    (trace,) = result.traces
    assert len(trace.codes) == len(trace.times_ticks) > 1000
    assert max(trace.times_ticks) < 0.1 * 125_000
    # cancelling a finished job is a no-op
    assert client.cancel(job.job_id).state == service_pb2.JOB_STATE_SUCCEEDED


def test_same_seed_same_result(client):
    first = client.run(_experiment(), timeout=60)
    second = client.run(_experiment(), timeout=60)
    assert list(first.traces[0].codes) == list(second.traces[0].codes)


def test_large_result_is_merged(client):
    """A 20 ms trace (~600k samples) is streamed in several chunks."""
    result = client.run(_experiment(runtime_ms=20.0), timeout=120)
    (trace,) = result.traces
    ticks = trace.times_ticks
    assert len(trace.codes) == len(ticks) > 500_000
    assert all(a < b for a, b in zip(ticks[:1000], ticks[1:1001]))
    assert ticks[-1] < 20.0 * 125_000


def test_unknown_job(client):
    with pytest.raises(hxemu.NotFoundError, match="job_id"):
        client.wait("0123456789abcdef", timeout=5)


def test_invalid_experiment_names_field(client):
    experiment = _experiment()
    experiment.populations[0].parameters.add(name="no_such_parameter", values=[1])
    with pytest.raises(hxemu.InvalidArgumentError, match="no_such_parameter"):
        client.run(experiment, timeout=60)

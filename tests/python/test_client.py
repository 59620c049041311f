"""hxemu.Client against the in-process fake server: wire behaviour, errors."""

import grpc
import pytest

import hxemu
from hxemu._proto import experiment_pb2, service_pb2
from hxemu.client import merge_result_chunks


def _experiment(runtime_ms=0.1, v_leak=700):
    experiment = experiment_pb2.Experiment(runtime_ms=runtime_ms, seed=1)
    population = experiment.populations.add(label="p", size=1,
                                            cell_type=experiment_pb2.CELL_TYPE_HX_NEURON)
    population.parameters.add(name="leak_v_leak", values=[v_leak])
    experiment.recordings.add(population=0, observable=experiment_pb2.OBSERVABLE_V)
    return experiment


def test_run_merges_chunked_traces(fake_server):
    with hxemu.Client(fake_server.address) as client:
        job = client.submit(_experiment())
        assert client.wait(job.job_id, timeout=60).state == service_pb2.JOB_STATE_SUCCEEDED
        result = client.result(job.job_id)
    # 0.1 ms at 34 ns/sample = 2941 samples, sent in chunks of 1000
    assert len(result.traces) == 1
    trace = result.traces[0]
    assert len(trace.codes) == len(trace.times_ticks) == 2941
    assert list(trace.times_ticks) == sorted(trace.times_ticks)
    assert list(result.population_labels) == ["p"]


def test_merge_result_chunks_concatenates_by_key():
    def chunk(neuron, ticks, codes, observable=experiment_pb2.OBSERVABLE_V):
        c = service_pb2.ResultChunk()
        c.result.traces.add(population=0, neuron=neuron, observable=observable,
                            times_ticks=ticks, codes=codes)
        return c

    header = service_pb2.ResultChunk()
    header.result.runtime_ms = 0.5
    header.result.population_labels.extend(["a", "b"])
    header.result.spike_trains.add(population=1, neuron=0, times_ticks=[1, 2])
    more_spikes = service_pb2.ResultChunk()
    more_spikes.result.spike_trains.add(population=1, neuron=0, times_ticks=[3])
    merged = merge_result_chunks([
        header, chunk(0, [1, 2], [10, 11]), chunk(1, [1], [50]), chunk(0, [3], [12]),
        more_spikes, chunk(0, [1], [7], experiment_pb2.OBSERVABLE_EXC_SYNIN)])
    assert merged.runtime_ms == 0.5
    assert list(merged.population_labels) == ["a", "b"]
    assert [(t.neuron, t.observable, list(t.codes)) for t in merged.traces] == [
        (0, experiment_pb2.OBSERVABLE_V, [10, 11, 12]),
        (1, experiment_pb2.OBSERVABLE_V, [50]),
        (0, experiment_pb2.OBSERVABLE_EXC_SYNIN, [7])]
    assert list(merged.traces[0].times_ticks) == [1, 2, 3]
    assert [list(s.times_ticks) for s in merged.spike_trains] == [[1, 2, 3]]


@pytest.mark.parametrize("variable", ["QUIGGELDY_USER_NO_MUNGE", "HXEMU_USER", "USER"])
def test_user_metadata(fake_server, monkeypatch, variable):
    for name in ("QUIGGELDY_USER_NO_MUNGE", "HXEMU_USER", "USER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, f"alice-{variable}")
    with hxemu.Client(fake_server.address) as client:
        client.server_info()
    assert fake_server.service.users[-1] == f"alice-{variable}"


def test_user_metadata_anonymous(fake_server, monkeypatch):
    for name in ("QUIGGELDY_USER_NO_MUNGE", "HXEMU_USER", "USER"):
        monkeypatch.delenv(name, raising=False)
    with hxemu.Client(fake_server.address) as client:
        client.server_info()
    assert fake_server.service.users[-1] == "anonymous"


def test_invalid_argument_is_value_error_with_field_message(fake_server):
    with hxemu.Client(fake_server.address) as client:
        with pytest.raises(hxemu.InvalidArgumentError) as info:
            client.submit(_experiment(runtime_ms=0))
    assert isinstance(info.value, ValueError)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "experiment.runtime_ms: must be > 0" in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_unknown_job_is_not_found(fake_server):
    with hxemu.Client(fake_server.address) as client:
        with pytest.raises(hxemu.NotFoundError, match="no job 'nope'"):
            client.get("nope")
        with pytest.raises(hxemu.NotFoundError):
            client.result("nope")


def test_failed_job_raises_with_job_error(fake_server):
    fake_server.service.fail_next_job = (grpc.StatusCode.RESOURCE_EXHAUSTED.value[0],
                                         "experiment.recordings: MADC supports 2 neurons")
    with hxemu.Client(fake_server.address) as client:
        with pytest.raises(hxemu.ResourceExhaustedError,
                           match="MADC supports 2 neurons") as info:
            client.run(_experiment())
    assert info.value.job_id


def test_bad_address_names_the_address():
    with hxemu.Client("127.0.0.1:1", call_timeout=5) as client:
        with pytest.raises(hxemu.UnavailableError, match="127.0.0.1:1") as info:
            client.server_info()
    assert isinstance(info.value, ConnectionError)


def test_address_from_environment(fake_server, monkeypatch):
    monkeypatch.setenv("HXEMU_ADDRESS", fake_server.address)
    with hxemu.Client() as client:
        assert client.address == fake_server.address
        assert client.server_info().version == "fake"

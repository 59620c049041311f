"""hxemu.pynn: RunCommand / snippets, SpikeSourcePoisson, connectors, weights,
MADC limits, Assembly, logger, get_current_time (issue 4)."""

import logging
import warnings

import numpy as np
import pytest
import quantities as pq
from pyNN.errors import ConnectionError as PyNNConnectionError

import hxemu.pynn as pynn_module
from hxemu._proto import experiment_pb2
from hxemu.pynn.experiment import check_madc
from hxemu.pynn.simulator import SnippetWarning

SILENT = dict(leak_v_leak=700, leak_i_bias=1022)
SPIKING = dict(leak_v_leak=1000, leak_i_bias=200, threshold_v_threshold=300,
               reset_v_reset=400, membrane_capacitance_capacitance=63,
               refractory_period_refractory_time=255, threshold_enable=True,
               reset_i_bias=1022, reset_enable_multiplication=True)
SIGN_TEXT = ("Weights must be positive for conductance-based and/or excitatory "
             "synapses and negative for inhibitory synapses")


def state():
    return pynn_module.simulator.state


# -- RunCommand ------------------------------------------------------------------

def test_prepare_builds_and_checks_without_running(offline_pynn):
    pynn = offline_pynn
    pop = pynn.Population(3, pynn.cells.HXNeuron(**SILENT))
    pop.record("v")
    with pytest.raises(RuntimeError, match="at most two neurons"):
        pynn.run(None, pynn.RunCommand.PREPARE)
    pop.record(None)
    pynn.PopulationView(pop, [0, 1]).record("v")
    assert pynn.run(None, pynn.RunCommand.PREPARE) == 0
    assert state().last_job is None and state().data is None
    assert len(state().last_experiment.recordings) == 1
    assert pynn.get_current_time() == 0


def test_preprocess_is_deprecated_prepare(offline_pynn):
    offline_pynn.Population(1, offline_pynn.cells.HXNeuron())
    with pytest.warns(DeprecationWarning, match="RunCommand.PREPARE"):
        offline_pynn.preprocess()


def test_run_command_errors(offline_pynn):
    pynn = offline_pynn
    pynn.Population(1, pynn.cells.HXNeuron())
    with pytest.raises(ValueError, match="executed for no time is forbidden"):
        pynn.run(None, pynn.RunCommand.APPEND)
    with pytest.raises(ValueError, match="No experiment scheduled for execution yet"):
        pynn.run(None)
    with pytest.raises(ValueError, match="Passed command is invalid"):
        pynn.run(0.1, "execute")
    with pytest.raises(ValueError, match="runtime must be > 0"):
        pynn.run(0, pynn.RunCommand.APPEND)
    assert state().snippets == []


def test_append_advances_time(offline_pynn):
    pynn = offline_pynn
    pynn.Population(1, pynn.cells.HXNeuron())
    assert pynn.run(0.1, pynn.RunCommand.APPEND) == pytest.approx(0.1)
    pynn.run(0.05, pynn.RunCommand.APPEND)
    assert pynn.get_current_time() == pytest.approx(0.15)
    assert [s.t_start for s in state().snippets] == pytest.approx([0, 0.1])


def test_equal_snippets_are_one_continuous_experiment(any_pynn):
    pynn = any_pynn
    pynn.setup()
    pop = pynn.Population(1, pynn.cells.HXNeuron(**SILENT))
    pop.record("v")
    stim = pynn.Population(1, pynn.cells.SpikeSourceArray(spike_times=[0.01, 0.06, 0.11]))
    stim.record("spikes")
    pynn.Projection(stim, pop, pynn.AllToAllConnector(),
                    synapse_type=pynn.synapses.StaticSynapse(weight=10))
    pynn.run(0.05, pynn.RunCommand.APPEND)
    pynn.run(0.05, pynn.RunCommand.APPEND)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SnippetWarning)
        assert pynn.run(0.05) == pytest.approx(0.15)
    experiment = state().last_experiment
    assert experiment.runtime_ms == pytest.approx(0.15)
    (train,) = experiment.populations[1].spike_source_array.spike_times
    assert list(train.times_ms) == pytest.approx([0.01, 0.06, 0.11])
    segment = pop.get_data("v").segments[-1]
    (signal,) = segment.irregularlysampledsignals
    times = signal.times.rescale(pq.ms).magnitude
    assert times[0] < 0.001 and 0.149 < times[-1] < 0.15 and np.all(np.diff(times) > 0)
    (source,) = stim.get_data("spikes").segments[-1].spiketrains
    assert list(source.magnitude) == pytest.approx([0.01, 0.06, 0.11])
    with pytest.raises(RuntimeError, match="Call pynn.reset"):
        pynn.run(0.05, pynn.RunCommand.APPEND)
    with pytest.raises(RuntimeError, match="Call pynn.reset"):
        pynn.run(0.05)


def test_spike_times_changed_between_snippets(any_pynn):
    """Per snippet, the sources' times inside its window are used."""
    pynn = any_pynn
    pynn.setup()
    pynn.Population(1, pynn.cells.HXNeuron(**SILENT))
    stim = pynn.Population(1, pynn.cells.SpikeSourceArray(spike_times=[0.01, 0.07]))
    stim.record("spikes")
    pynn.run(0.05, pynn.RunCommand.APPEND)
    stim.set(spike_times=[0.02, 0.08])
    pynn.run(0.05)
    (train,) = state().last_experiment.populations[1].spike_source_array.spike_times
    assert list(train.times_ms) == pytest.approx([0.01, 0.08])
    (source,) = stim.get_data("spikes").segments[-1].spiketrains
    assert list(source.magnitude) == pytest.approx([0.01, 0.08])


def test_changed_parameters_run_as_consecutive_experiments(any_pynn):
    pynn = any_pynn
    pynn.setup()
    pop = pynn.Population(1, pynn.cells.HXNeuron(leak_v_leak=900, leak_i_bias=1022))
    pop.record("v")
    pynn.run(0.1, pynn.RunCommand.APPEND)
    pop.set(leak_v_leak=500)
    with pytest.warns(SnippetWarning, match="2 consecutive experiments on the same chip"):
        pynn.run(0.1)
    assert state().last_experiment.runtime_ms == pytest.approx(0.1)
    assert state().last_experiment.HasField("chip_id")  # pinned to the first's chip
    (signal,) = pop.get_data("v").segments[-1].irregularlysampledsignals
    times = signal.times.magnitude
    values = signal.magnitude.ravel()
    assert np.all(np.diff(times) > 0) and times[-1] > 0.19
    first, second = values[times < 0.09].mean(), values[times > 0.15].mean()
    assert first > second + 50, (first, second)
    # the next segment starts afresh
    pynn.reset()
    pynn.run(0.05)
    assert len(pop.get_data("v").segments) == 2


# -- SpikeSourcePoisson -----------------------------------------------------------

def test_poisson_experiment(offline_pynn):
    pynn = offline_pynn
    src = pynn.Population(3, pynn.cells.SpikeSourcePoisson(rate=2e4, start=0.1,
                                                           duration=0.3))
    src.record("spikes")
    pop = pynn.Population(1, pynn.cells.HXNeuron())
    pynn.Projection(src, pop, pynn.AllToAllConnector(),
                    synapse_type=pynn.synapses.StaticSynapse(weight=20))
    pynn.run(None, pynn.RunCommand.PREPARE)
    message = state().last_experiment.populations[0]
    assert message.cell_type == experiment_pb2.CELL_TYPE_SPIKE_SOURCE_POISSON
    assert (message.spike_source_poisson.rate_hz, message.spike_source_poisson.start_ms,
            message.spike_source_poisson.duration_ms) == pytest.approx((2e4, 0.1, 0.3))
    recording = state().last_experiment.recordings[0]
    assert (recording.population, recording.observable) == (0, experiment_pb2.OBSERVABLE_SPIKES)
    assert pynn.cells.SpikeSourcePoisson in [type(src.celltype)]


@pytest.mark.parametrize("t_start, runtime, expected", [
    (0.0, 0.2, (2e4, 0.1, 0.1)),    # window starts inside
    (0.2, 0.1, (2e4, 0.0, 0.1)),    # fully inside
    (0.35, 0.2, (2e4, 0.0, 0.05)),  # ends inside
    (0.5, 0.1, (0.0, 0.0, 0.0)),    # after the window
    (0.0, 0.1, (0.0, 0.0, 0.0)),    # before the window
])
def test_poisson_window_per_snippet(offline_pynn, t_start, runtime, expected):
    src = offline_pynn.Population(2, offline_pynn.cells.SpikeSourcePoisson(
        rate=2e4, start=0.1, duration=0.3))
    assert src.celltype.window(src, runtime, t_start) == pytest.approx(expected)


def test_poisson_parameter_errors(offline_pynn):
    pynn = offline_pynn
    src = pynn.Population(2, pynn.cells.SpikeSourcePoisson(rate=[1e4, 2e4]))
    with pytest.raises(NotImplementedError, match="rate must be the same"):
        pynn.run(None, pynn.RunCommand.PREPARE)
    src.set(rate=-5.0)
    with pytest.raises(ValueError, match="rate must be finite and >= 0"):
        pynn.run(None, pynn.RunCommand.PREPARE)


def test_poisson_on_the_server(pynn):
    def spikes(seed):
        pynn.setup(rng_seed=seed)
        src = pynn.Population(4, pynn.cells.SpikeSourcePoisson(rate=2e4, start=0.1,
                                                               duration=0.5))
        src.record("spikes")
        pop = pynn.Population(1, pynn.cells.HXNeuron(**SILENT))
        pynn.Projection(src, pop, pynn.AllToAllConnector(),
                        synapse_type=pynn.synapses.StaticSynapse(weight=130))
        pynn.run(1.0)
        trains = [t.magnitude for t in src.get_data("spikes").segments[-1].spiketrains]
        pynn.end()
        return trains

    first, again, other = spikes(7), spikes(7), spikes(8)
    assert len(first) == 4
    for train in first:
        assert np.all((train >= 0.1) & (train < 0.6))
    counts = sum(len(t) for t in first)
    assert 20 < counts < 70, counts  # 4 x 20 kHz x 0.5 ms = 40 expected
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))


def test_poisson_over_snippets_is_one_window(any_pynn):
    pynn = any_pynn
    pynn.setup()
    src = pynn.Population(2, pynn.cells.SpikeSourcePoisson(rate=2e4, start=0.05,
                                                           duration=0.1))
    pynn.Population(1, pynn.cells.HXNeuron())
    src.record("spikes")
    pynn.run(0.1, pynn.RunCommand.APPEND)
    pynn.run(0.1)
    poisson = state().last_experiment.populations[0].spike_source_poisson
    assert (poisson.rate_hz, poisson.start_ms, poisson.duration_ms) == \
        pytest.approx((2e4, 0.05, 0.1))


# -- Projection: connectors, weights, errors -----------------------------------------

def _connections(pynn, connector, pre_size=4, post_size=3, **kwargs):
    pre = pynn.Population(pre_size, pynn.cells.SpikeSourceArray(spike_times=[0.01]))
    post = pynn.Population(post_size, pynn.cells.HXNeuron())
    projection = pynn.Projection(pre, post, connector,
                                 synapse_type=pynn.synapses.StaticSynapse(weight=5),
                                 **kwargs)
    pynn.run(None, pynn.RunCommand.PREPARE)
    message = state().last_experiment.projections[-1]
    return projection, sorted(zip(message.pre_indices, message.post_indices, message.weights))


def test_all_to_all(offline_pynn):
    projection, connections = _connections(offline_pynn, offline_pynn.AllToAllConnector())
    assert len(projection) == 12
    assert connections == [(i, j, 5) for i in range(4) for j in range(3)]


def test_one_to_one(offline_pynn):
    projection, connections = _connections(offline_pynn, offline_pynn.OneToOneConnector(),
                                           pre_size=3)
    assert connections == [(0, 0, 5), (1, 1, 5), (2, 2, 5)]


def test_fixed_probability(offline_pynn):
    from pyNN.random import NumpyRNG
    _, none = _connections(offline_pynn, offline_pynn.FixedProbabilityConnector(0.0))
    _, everything = _connections(offline_pynn, offline_pynn.FixedProbabilityConnector(1.0))
    projection, some = _connections(
        offline_pynn, offline_pynn.FixedProbabilityConnector(0.5, rng=NumpyRNG(seed=3)),
        pre_size=20, post_size=20)
    assert none == [] and len(everything) == 12
    assert 100 < len(some) < 300 and len(projection) == len(some)


def test_from_list_with_weights(offline_pynn):
    projection, connections = _connections(
        offline_pynn,
        offline_pynn.FromListConnector([(0, 1, 7.0, 0), (3, 2, 200.4, 0), (2, 0, 63, 0)],
                                       column_names=["weight", "delay"]))
    # weights > 63 are sent as they are (the server splits them), rounded
    assert connections == [(0, 1, 7), (2, 0, 63), (3, 2, 200)]
    assert sorted(projection.get("weight", format="list")) == \
        sorted([(0, 1, 7.0), (3, 2, 200.4), (2, 0, 63.0)])


def test_large_inhibitory_weights_are_sent_as_is(offline_pynn):
    pynn = offline_pynn
    pre = pynn.Population(1, pynn.cells.SpikeSourceArray(spike_times=[0.01]))
    post = pynn.Population(1, pynn.cells.HXNeuron())
    pynn.Projection(pre, post, pynn.AllToAllConnector(),
                    synapse_type=pynn.synapses.StaticSynapse(weight=-300),
                    receptor_type="inhibitory")
    pynn.run(None, pynn.RunCommand.PREPARE)
    message = state().last_experiment.projections[0]
    assert list(message.weights) == [-300]
    assert message.receptor_type == experiment_pb2.RECEPTOR_TYPE_INHIBITORY


def test_connectors_on_the_server(pynn):
    pynn.setup()
    pre = pynn.Population(3, pynn.cells.SpikeSourceArray(spike_times=[0.01, 0.02]))
    post = pynn.Population(3, pynn.cells.HXNeuron(**SILENT))
    post.record("spikes")
    for connector in (pynn.AllToAllConnector(), pynn.OneToOneConnector(),
                      pynn.FixedProbabilityConnector(0.5),
                      pynn.FromListConnector([(0, 2), (1, 1)])):
        pynn.Projection(pre, post, connector,
                        synapse_type=pynn.synapses.StaticSynapse(weight=123))
    pynn.run(0.05)
    assert len(post.get_data("spikes").segments[-1].spiketrains) == 3


@pytest.mark.parametrize("weight, receptor", [(-1, "excitatory"), (1, "inhibitory")])
def test_sign_rule_message(offline_pynn, weight, receptor):
    pynn = offline_pynn
    pre = pynn.Population(1, pynn.cells.SpikeSourceArray(spike_times=[0.01]))
    post = pynn.Population(1, pynn.cells.HXNeuron())
    with pytest.raises(PyNNConnectionError) as info:
        pynn.Projection(pre, post, pynn.AllToAllConnector(),
                        synapse_type=pynn.synapses.StaticSynapse(weight=weight),
                        receptor_type=receptor)
    assert str(info.value) == SIGN_TEXT
    projection = pynn.Projection(pre, post, pynn.AllToAllConnector(),
                                 synapse_type=pynn.synapses.StaticSynapse(weight=0),
                                 receptor_type=receptor)
    with pytest.raises(PyNNConnectionError) as info:
        projection.set(weight=weight)
    assert str(info.value) == SIGN_TEXT


def test_delay_message(offline_pynn):
    pynn = offline_pynn
    pre = pynn.Population(1, pynn.cells.SpikeSourceArray(spike_times=[0.01]))
    post = pynn.Population(1, pynn.cells.HXNeuron())
    with pytest.raises(ValueError) as info:
        pynn.Projection(pre, post, pynn.OneToOneConnector(),
                        synapse_type=pynn.synapses.StaticSynapse(weight=1, delay=0.5))
    assert str(info.value) == "Setting the delay unequal 0 is not supported."
    projection = pynn.Projection(pre, post, pynn.OneToOneConnector(),
                                 synapse_type=pynn.synapses.StaticSynapse(weight=1))
    with pytest.raises(ValueError, match="^Setting the delay unequal 0 is not supported.$"):
        projection.set(delay=1.0)


# -- MADC limits (client-side, before submitting) -----------------------------------

@pytest.mark.parametrize("variable", ["v", "exc_synin", "inh_synin"])
def test_madc_at_most_two_neurons(offline_pynn, variable):
    pynn = offline_pynn
    a = pynn.Population(2, pynn.cells.HXNeuron())
    b = pynn.Population(1, pynn.cells.HXNeuron())
    a.record(variable)
    b.record(variable)
    with pytest.raises(RuntimeError) as info:
        pynn.run(0.1)
    assert str(info.value) == "MADC recording supports recording at most two neurons."
    assert state().last_job is None and state().snippets == []


@pytest.mark.parametrize("permutation, neurons, ok", [
    (None, [0, 1], True), (None, [0, 2], False), (None, [1, 3], False),
    ([0, 256], [0, 1], False),   # same column parity across the two rows
    ([0, 257], [0, 1], True),
])
def test_madc_column_parity(offline_pynn, permutation, neurons, ok):
    pynn = offline_pynn
    if permutation is not None:
        pynn.setup(connection="127.0.0.1:1", neuronPermutation=permutation)
    pop = pynn.Population(4 if permutation is None else 2, pynn.cells.HXNeuron())
    pynn.PopulationView(pop, neurons).record("exc_synin")
    if ok:
        pynn.run(None, pynn.RunCommand.PREPARE)
        return
    with pytest.raises(RuntimeError, match=r"^MADC recording neurons are required to "
                       r"reside in columns with unique parity \(even/odd\)\."):
        pynn.run(0.1)
    assert state().last_job is None


def test_madc_same_circuit_twice():
    experiment = experiment_pb2.Experiment(runtime_ms=0.1)
    for _ in range(2):
        experiment.populations.add(size=1, cell_type=experiment_pb2.CELL_TYPE_HX_NEURON,
                                   circuits=[5])
        experiment.recordings.add(population=len(experiment.populations) - 1,
                                  observable=experiment_pb2.OBSERVABLE_V)
    with pytest.raises(RuntimeError, match="^MADC recording neurons are the same.$"):
        check_madc(experiment)


def test_two_synaptic_input_traces_on_the_server(any_pynn):
    pynn = any_pynn
    pynn.setup()
    pop = pynn.Population(2, pynn.cells.HXNeuron(**SILENT))
    pynn.PopulationView(pop, [0]).record("exc_synin")
    pynn.PopulationView(pop, [1]).record("inh_synin")
    pynn.run(0.05)
    segment = pop.get_data().segments[-1]
    assert sorted(s.name for s in segment.irregularlysampledsignals) == \
        ["exc_synin", "inh_synin"]


# -- Assembly ---------------------------------------------------------------------

def test_assembly(any_pynn):
    pynn = any_pynn
    pynn.setup()
    a = pynn.Population(1, pynn.cells.HXNeuron(**SPIKING), label="a")
    b = pynn.Population(2, pynn.cells.HXNeuron(**SILENT), label="b")
    assembly = a + b
    assert isinstance(assembly, pynn.Assembly) and assembly.size == 3
    assembly.record("spikes")
    pynn.PopulationView(b, [1]).record("v")
    pynn.run(0.1)
    block = assembly.get_data()
    segment = block.segments[-1]
    assert len(segment.spiketrains) == 3
    assert len(segment.irregularlysampledsignals) == 1
    assert sum(len(t) for t in segment.spiketrains) == len(segment.spiketrains[0]) > 0
    with pytest.raises(NotImplementedError, match="Assemblies"):
        pynn.Projection(assembly, b, pynn.AllToAllConnector())


# -- logger -------------------------------------------------------------------------

def test_logger(tmp_path, capsys):
    log = pynn_module.logger
    try:
        log.default_config(level=log.LogLevel.WARN)
        experiment = log.get("hxemu_test.experiment")
        experiment.INFO("hidden")
        experiment.WARN("shown", 1)
        log.set_loglevel(experiment, log.LogLevel.DEBUG)
        experiment.DEBUG("debug now")
        experiment.info("logging-style call")
        out = capsys.readouterr().out
        assert "shown 1" in out and "debug now" in out and "logging-style call" in out
        assert "hidden" not in out
        path = tmp_path / "log.txt"
        log.default_config(level="INFO", fname=str(path))
        experiment.INFO("to file")
        experiment.TRACE("not at INFO")
        assert "to file" in path.read_text() and "not at INFO" not in path.read_text()
        assert capsys.readouterr().out == ""
        with pytest.raises(ValueError, match="unknown log level 'LOUD'"):
            log.set_loglevel(experiment, "LOUD")
    finally:
        log.reset()
        logging.getLogger("hxemu_test.experiment").setLevel(logging.NOTSET)
    assert "logger" in pynn_module.__all__ and pynn_module.logger.LogLevel.FATAL


# -- failures while executing -------------------------------------------------------

def test_failed_job_keeps_the_snippets(fake_pynn, fake_server):
    import hxemu
    pynn = fake_pynn
    pynn.setup()
    pop = pynn.Population(1, pynn.cells.HXNeuron(**SILENT))
    pop.record("v")
    pynn.run(0.05, pynn.RunCommand.APPEND)
    fake_server.service.fail_next_job = (8, "emulator: out of chips")
    with pytest.raises(hxemu.ResourceExhaustedError, match="out of chips"):
        pynn.run(0.05)
    assert len(state().snippets) == 2 and not state().running
    pynn.run(None)  # retry the same snippets
    assert state().last_experiment.runtime_ms == pytest.approx(0.1)


def test_interrupt_cancels_the_job(fake_pynn, monkeypatch):
    import hxemu
    pynn = fake_pynn
    pynn.setup()
    pynn.Population(1, pynn.cells.HXNeuron())
    cancelled = []
    monkeypatch.setattr(hxemu.Client, "cancel",
                        lambda self, job_id: cancelled.append(job_id))

    def interrupted(client, job, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pynn_module.simulator, "wait_with_progress", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pynn.run(0.05)
    assert cancelled == [state().last_job.job_id]

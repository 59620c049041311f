"""hxemu.pynn: CADC recording, the plasticity keys of HXNeuron, placement
statistics (get_backend_statistics, Projection.placed_connections) and the
rest of pynn_brainscales' exported names (issue 4)."""

import datetime
import inspect
import warnings

import numpy as np
import pytest

import hxemu.pynn as pynn_module
from hxemu.pynn.experiment import CADC_PERIOD_MS, MAX_CADC_READS
from hxemu.pynn.simulator import SnippetWarning

SILENT = dict(leak_i_bias=1022)


def state():
    return pynn_module.simulator.state


# -- CADC ------------------------------------------------------------------------

def test_cadc_reads_every_recorded_membrane(pynn):
    """record("v", device="cadc") on many neurons: one 8-bit signal per
    neuron, read every CADC_PERIOD_MS, that follows each neuron's leak
    potential; the MADC trace of one of them is there too, told apart by
    the device annotation."""
    pynn.setup(rng_seed=3)
    leaks = [300, 500, 700, 900]
    pop = pynn.Population(4, pynn.cells.HXNeuron(leak_v_leak=leaks, **SILENT))
    other = pynn.Population(2, pynn.cells.HXNeuron(leak_v_leak=600, **SILENT))
    pop.record("v", device="cadc")
    pynn.PopulationView(other, [1]).record("v", device="cadc")
    pynn.PopulationView(pop, [0]).record("v")  # MADC
    pynn.run(0.05)
    signals = pop.get_data("v").segments[-1].irregularlysampledsignals
    assert [s.annotations["device"] for s in signals] == ["madc"] + ["cadc"] * 4
    cadc = signals[1:]
    assert [s.annotations["source_ids"][0] for s in cadc] == [int(i) for i in pop.all_cells]
    means = []
    for signal in cadc:
        assert signal.name == "v"
        assert str(signal.units.dimensionality) == "dimensionless"
        times = signal.times.rescale("ms").magnitude
        assert len(times) == 50
        np.testing.assert_allclose(times, np.arange(50) * CADC_PERIOD_MS, atol=1e-6)
        codes = signal.magnitude.ravel()
        assert np.all((codes >= 0) & (codes <= 255)) and np.all(codes == np.round(codes))
        means.append(float(np.mean(codes[10:])))
    assert all(b > a + 10 for a, b in zip(means, means[1:])), means
    # the MADC (10 bit) and the CADC (8 bit) see the same membrane differently
    assert np.mean(signals[0].magnitude) > means[0] + 50
    # only the view's neuron of the other population
    other_signals = other.get_data("v").segments[-1].irregularlysampledsignals
    assert [s.annotations["source_ids"][0] for s in other_signals] == [int(other[1])]
    assert [s.array_annotations["channel_index"][0] for s in other_signals] == [1]


def test_cadc_has_no_madc_limits_and_snippets_concatenate(pynn):
    """Ten neurons on the CADC are no MADC violation; snippets with the same
    configuration are one experiment reading over both; two snippets with
    different parameters give one signal per neuron over both."""
    pynn.setup(rng_seed=4)
    pop = pynn.Population(10, pynn.cells.HXNeuron(leak_v_leak=400, **SILENT))
    pop.record("v", device="cadc")
    pynn.run(0.02, pynn.RunCommand.APPEND)
    pynn.run(0.02)
    np.testing.assert_allclose(state().last_experiment.cadc.times_ms,
                               np.arange(40) * CADC_PERIOD_MS)
    times = pop.get_data("v").segments[-1].irregularlysampledsignals[3].times.magnitude
    np.testing.assert_allclose(times, np.arange(40) * CADC_PERIOD_MS, atol=1e-6)
    pynn.reset()
    pynn.run(0.02, pynn.RunCommand.APPEND)
    pop.set(leak_v_leak=900)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SnippetWarning)
        pynn.run(0.02)
    signals = pop.get_data("v").segments[-1].irregularlysampledsignals
    assert len(signals) == 10
    for signal in signals:
        times = signal.times.magnitude
        assert len(times) == 40 and np.all(np.diff(times) > 0)
        assert times[20] == pytest.approx(0.02, abs=1e-6)
        codes = signal.magnitude.ravel()
        assert np.mean(codes[30:]) > np.mean(codes[5:20]) + 20


def test_cadc_record_none_and_reset(pynn):
    """record(None) stops the CADC too; a reset starts a new segment."""
    pynn.setup(rng_seed=5)
    pop = pynn.Population(2, pynn.cells.HXNeuron(**SILENT))
    pop.record(["v", "spikes"], device="cadc")
    pynn.run(0.01)
    pynn.reset()
    pop.record(None)
    pop.record("spikes")
    pynn.run(0.01)
    assert not state().last_experiment.cadc.times_ms
    block = pop.get_data()
    assert [len(s.irregularlysampledsignals) for s in block.segments] == [2, 0]
    assert [len(s.spiketrains) for s in block.segments] == [2, 2]


def test_cadc_errors(offline_pynn):
    pynn = offline_pynn
    pop = pynn.Population(2, pynn.cells.HXNeuron())
    with pytest.raises(NotImplementedError, match="membrane potential"):
        pop.record("exc_synin", device="cadc")
    with pytest.raises(ValueError, match='Device "pad_0" is not supported'):
        pop.record("v", device="pad_0")
    pop.record("v", device="cadc")
    # one analog variable per neuron, across devices
    with pytest.raises(RuntimeError, match="1 analog record type per neuron"):
        pynn.PopulationView(pop, [0]).record("adaptation")
    pynn.run(None, pynn.RunCommand.PREPARE)  # no runtime yet: no reads
    assert not state().last_experiment.cadc.times_ms
    runtime = (MAX_CADC_READS + 1) * CADC_PERIOD_MS
    with pytest.raises(ValueError, match=f"more than the {MAX_CADC_READS}"):
        pynn.run(runtime, pynn.RunCommand.APPEND)


# -- plasticity keys ---------------------------------------------------------------

def test_plasticity_keys_accepted_with_defaults_only(offline_pynn):
    pynn = offline_pynn
    names = pynn.cells.HXNeuron().get_parameter_names()
    defaults = pynn.cells.HXNeuron.default_parameters
    assert defaults["plasticity_rule_readout_source"] == 0.0
    assert defaults["plasticity_rule_enable_readout_source"] is False
    assert {"plasticity_rule_readout_source",
            "plasticity_rule_enable_readout_source"} <= set(names)
    pop = pynn.Population(2, pynn.cells.HXNeuron(
        plasticity_rule_readout_source=0, plasticity_rule_enable_readout_source=False))
    pop.set(plasticity_rule_readout_source=0.0)
    assert list(pop.get("plasticity_rule_enable_readout_source", simplify=False)) == \
        [False, False]
    pynn.run(None, pynn.RunCommand.PREPARE)
    sent = {p.name for p in state().last_experiment.populations[0].parameters}
    assert not sent & {"plasticity_rule_readout_source",
                       "plasticity_rule_enable_readout_source"}
    assert pynn.cells.HXNeuron(plasticity_rule=None).parameter_space["leak_v_leak"] == 0
    with pytest.raises(NotImplementedError, match="plasticity_rule"):
        pynn.cells.HXNeuron(plasticity_rule=object())
    for name, value in (("plasticity_rule_readout_source", 1),
                        ("plasticity_rule_enable_readout_source", True)):
        with pytest.raises(NotImplementedError, match=name):
            pynn.cells.HXNeuron(**{name: value})
        with pytest.raises(NotImplementedError, match=name):
            pop.set(**{name: value})
        with pytest.raises(NotImplementedError, match=name):
            pynn.PopulationView(pop, [1]).set(**{name: value})


# -- placement statistics ------------------------------------------------------------

def test_backend_statistics_and_placed_connections(offline_pynn):
    pynn = offline_pynn
    with pytest.raises(RuntimeError, match="pynn.run"):
        pynn.get_backend_statistics()
    source = pynn.Population(3, pynn.cells.SpikeSourceArray(spike_times=[0.01]))
    first = pynn.Population(2, pynn.cells.HXNeuron())
    second = pynn.Population(3, pynn.cells.HXNeuron())
    exc = pynn.Projection(source, second, pynn.FromListConnector(
        [(0, 0, 10), (1, 2, 123), (2, 1, 0)], column_names=["weight"]))
    inh = pynn.Projection(source, first, pynn.AllToAllConnector(),
                          synapse_type=pynn.synapses.StaticSynapse(weight=-63),
                          receptor_type="inhibitory")
    with pytest.raises(RuntimeError, match="pynn.run"):
        exc.placed_connections  # pylint: disable=pointless-statement
    pynn.run(None, pynn.RunCommand.PREPARE)
    placed = exc.placed_connections
    by_pair = {(c.presynaptic_index, c.postsynaptic_index): synapses
               for c, synapses in zip(exc.connections, placed)}
    # second population on circuits 2, 3, 4
    assert by_pair[(0, 0)] == [(0, 2, 2, 10)]
    assert [s.weight for s in by_pair[(1, 2)]] == [63, 60]
    assert {(s.hemisphere, s.column, s.circuit) for s in by_pair[(1, 2)]} == {(0, 4, 4)}
    assert by_pair[(2, 1)] == []  # weight 0 takes no synapse
    assert len(inh.placed_connections) == 6
    assert all(len(s) == 1 and s[0].weight == 63 for s in inh.placed_connections)
    stats = pynn.get_backend_statistics()
    assert stats.get_num_populations() == 2
    assert stats.get_num_projections() == 2
    assert stats.get_num_neurons() == 5
    assert stats.get_num_synapses() == 1 + 2 + 6
    assert stats.get_neuron_usage() == pytest.approx(5 / 512)
    assert stats.get_synapse_usage() == pytest.approx(9 / 131072)
    assert isinstance(stats.get_abstract_network_construction_duration(),
                      datetime.timedelta)
    assert "num neurons: 5" in str(stats)
    with pytest.raises(NotImplementedError, match="synapse-row routing"):
        stats.get_num_synapse_drivers()
    with pytest.raises(NotImplementedError, match="does not report"):
        stats.get_routing_duration()


def test_placement_follows_neuron_permutation():
    pynn_module.setup(connection="127.0.0.1:1", neuronPermutation=[300, 7])
    try:
        source = pynn_module.Population(1, pynn_module.cells.SpikeSourceArray())
        pop = pynn_module.Population(2, pynn_module.cells.HXNeuron())
        projection = pynn_module.Projection(source, pop, pynn_module.AllToAllConnector(),
                                            pynn_module.synapses.StaticSynapse(weight=5))
        pynn_module.run(None, pynn_module.RunCommand.PREPARE)
        placed = [s[0][:3] for s in projection.placed_connections]
        assert placed == [(1, 44, 300), (0, 7, 7)]
    finally:
        pynn_module.end()


# -- the remaining exported names -----------------------------------------------------

def test_exported_names_of_pynn_brainscales(offline_pynn):
    pynn = offline_pynn
    for name in ["list_standard_models", "setup", "end", "run", "run_until", "run_for",
                 "reset", "initialize", "get_current_time", "create", "connect", "set",
                 "record", "logger", "preprocess", "Timer", "PlasticityRule",
                 "InjectedConfiguration", "InjectedReadout", "RunCommand",
                 "get_pre_realtime_read", "get_post_realtime_read",
                 "get_post_realtime_read_ppu_symbols", "get_backend_statistics"]:
        assert hasattr(pynn, name), name
    assert pynn.list_standard_models() == [
        pynn.cells.HXNeuron, pynn.cells.CalibHXNeuronCuba, pynn.cells.CalibHXNeuronCoba]
    assert pynn.run_for is pynn.run
    timer = pynn.Timer(start=0.01, period=0.1, num_periods=3, extra=1)
    assert (timer.start, timer.period, timer.num_periods, timer.parameters) == \
        (0.01, 0.1, 3, {"extra": 1})
    with pytest.raises(NotImplementedError, match="plasticity processor"):
        pynn.PlasticityRule(timer)
    assert list(inspect.signature(pynn.get_pre_realtime_read).parameters) == []
    assert pynn.get_pre_realtime_read() == {} and pynn.get_post_realtime_read() == {}
    with pytest.raises(RuntimeError, match="pynn.run"):
        pynn.get_post_realtime_read_ppu_symbols()
    with pytest.warns(DeprecationWarning):
        pynn.preprocess()
    assert state().last_experiment is not None
    pop = pynn.Population(1, pynn.cells.HXNeuron())
    pynn.initialize(pop, v=0)  # accepted; hxemu neurons start from rest


def test_run_until_and_realtime_reads_after_a_run(pynn):
    pynn.setup(rng_seed=1)
    pop = pynn.Population(1, pynn.cells.HXNeuron(**SILENT))
    pop.record("spikes")
    assert pynn.run_until(0.01) == pytest.approx(0.01)
    assert pynn.get_current_time() == pytest.approx(0.01)
    assert pynn.get_post_realtime_read_ppu_symbols() == {}

"""hxemu.pynn: experiment building, errors and the neo output structure.

Tests taking ``any_pynn`` run twice: against the in-process fake server
(anywhere) and against the real hxemu server (marked ``server``).
"""

import neo
import numpy as np
import pytest
import quantities as pq
from pyNN.errors import ConnectionError as PyNNConnectionError
from pyNN.random import RandomDistribution

import hxemu
import hxemu.pynn as pynn_module
from hxemu._proto import experiment_pb2
from hxemu.pynn.experiment import build_experiment
from hxemu.pynn.standardmodels.cells import SpikeSourceArray
from hxemu.pynn.standardmodels.synapses import StaticSynapse

SILENT = dict(leak_v_leak=700, leak_i_bias=1022)
SPIKING = dict(leak_v_leak=1000, leak_i_bias=200, threshold_v_threshold=300,
               reset_v_reset=400, membrane_capacitance_capacitance=63,
               refractory_period_refractory_time=255, threshold_enable=True,
               reset_i_bias=1022, reset_enable_multiplication=True)


# -- the parameter table ------------------------------------------------------

def test_hxneuron_parameters_come_from_the_table():
    from hxemu import _parameters
    table = _parameters.neuron_parameters()
    names = pynn_module.cells.HXNeuron().get_parameter_names()
    # plus pynn_brainscales' two generic plasticity keys (NeuronCellType)
    assert names == list(table) + ["plasticity_rule_readout_source",
                                   "plasticity_rule_enable_readout_source"]
    assert "leak_v_leak" in names and "membrane_capacitance_capacitance" in names
    defaults = pynn_module.cells.HXNeuron.default_parameters
    for name, info in table.items():
        assert defaults[name] == (bool(info.default) if info.is_bool else float(info.default))
    assert pynn_module.cells.HXNeuron.parameter_range("leak_v_leak") == (0, 1022)


@pytest.mark.parametrize("name, value, expected", [
    ("leak_v_leak", 1023, "[0, 1022]"),
    ("leak_v_leak", -1, "[0, 1022]"),
    ("membrane_capacitance_capacitance", 64, "[0, 63]"),
    ("refractory_period_refractory_time", 256, "[0, 255]"),
    ("threshold_enable", 2, "bool"),
])
def test_out_of_range_parameter_names_parameter_and_range(name, value, expected):
    with pytest.raises(ValueError, match=f"'{name}' = {value} is out of range") as info:
        pynn_module.cells.HXNeuron(**{name: value})
    assert expected in str(info.value)


def test_out_of_range_on_set_and_per_neuron(offline_pynn):
    pop = offline_pynn.Population(3, offline_pynn.cells.HXNeuron(**SILENT))
    with pytest.raises(ValueError, match="'leak_i_bias' = 2000"):
        pop.set(leak_i_bias=[10, 2000, 30])
    with pytest.raises(ValueError, match="'reset_v_reset' = 1100"):
        offline_pynn.PopulationView(pop, [1]).set(reset_v_reset=1100)
    with pytest.raises(ValueError, match="'leak_v_leak'"):
        offline_pynn.Population(2, offline_pynn.cells.HXNeuron(
            leak_v_leak=RandomDistribution("uniform", (1100, 1200))))
    assert list(pop.get("leak_i_bias", simplify=False)) == [1022, 1022, 1022]


def test_unknown_parameter_is_rejected():
    with pytest.raises(KeyError, match="leak_v_leakk"):
        pynn_module.cells.HXNeuron(leak_v_leakk=3)


# -- setup / run errors ---------------------------------------------------------

def test_setup_rejects_unknown_keyword():
    with pytest.raises(KeyError, match="unhandled extra_params.*no_such_option"):
        pynn_module.setup(no_such_option=True)
    pynn_module.end()


def test_setup_rejects_a_lola_chip_as_initial_config():
    with pytest.raises(TypeError, match="initial_config must be an hxemu.v1.Calibration"):
        pynn_module.setup(initial_config=object())
    pynn_module.end()


def test_bad_server_address_gives_clear_error(offline_pynn):
    pop = offline_pynn.Population(1, offline_pynn.cells.HXNeuron(**SILENT))
    pop.record("v")
    with pytest.raises(hxemu.UnavailableError,
                       match="cannot reach the hxemu server at 127.0.0.1:1"):
        offline_pynn.run(0.1)


def test_run_twice_without_reset(any_pynn):
    any_pynn.setup()
    any_pynn.Population(1, any_pynn.cells.HXNeuron(**SILENT)).record("v")
    any_pynn.run(0.05)
    with pytest.raises(RuntimeError, match=r"Call pynn.reset\(\) before calling pynn.run\(\) again"):
        any_pynn.run(0.05)
    any_pynn.reset()
    any_pynn.run(0.05)  # fine after reset


def test_nonpositive_runtime(offline_pynn):
    with pytest.raises(ValueError, match="runtime must be > 0"):
        offline_pynn.run(0)


def test_server_side_validation_surfaces_as_value_error(any_pynn):
    """An experiment the server rejects: HxemuError + ValueError naming the field."""
    experiment = experiment_pb2.Experiment(runtime_ms=0.05, seed=1)
    population = experiment.populations.add(label="p", size=1,
                                            cell_type=experiment_pb2.CELL_TYPE_HX_NEURON)
    population.parameters.add(name="leak_v_leak", values=[5000])
    experiment.recordings.add(population=0, observable=experiment_pb2.OBSERVABLE_V)
    with hxemu.Client() as client:
        with pytest.raises(ValueError, match="leak_v_leak") as info:
            client.run(experiment, timeout=60)
    assert isinstance(info.value, hxemu.HxemuError)
    assert info.value.code.name in ("INVALID_ARGUMENT", "OUT_OF_RANGE")


# -- network -> Experiment -------------------------------------------------------

def test_experiment_from_network(offline_pynn):
    pynn = offline_pynn
    pynn.setup(connection="127.0.0.1:1", rng_seed=7,
               neuronPermutation=[10, 11, 12, 5])
    neurons = pynn.Population(3, pynn.cells.HXNeuron(**SILENT), label="neurons")
    neurons.set(leak_v_leak=[500, 600, 700])
    other = pynn.Population(1, pynn.cells.HXNeuron(), label="other")
    stim = pynn.Population(2, SpikeSourceArray(spike_times=[0.01, 0.02, 0.5, -1]),
                           label="stim")
    pynn.Projection(stim, neurons, pynn.AllToAllConnector(),
                    synapse_type=StaticSynapse(weight=31.4), receptor_type="excitatory")
    pynn.Projection(pynn.PopulationView(stim, [1]), pynn.PopulationView(neurons, [2]),
                    pynn.OneToOneConnector(), synapse_type=StaticSynapse(weight=-63),
                    receptor_type="inhibitory")
    pynn.Projection(stim, other, pynn.FromListConnector([(0, 0, 100.0)], column_names=["weight"]),
                    synapse_type=StaticSynapse(weight=0), receptor_type="excitatory")
    pynn.PopulationView(neurons, [1]).record(["v", "spikes"])
    stim.record("spikes")

    experiment = build_experiment(pynn.simulator.state, 0.2, seed=3)
    assert experiment.runtime_ms == 0.2 and experiment.seed == 3
    p0, p1, p2 = experiment.populations
    assert (p0.label, p0.size, p0.cell_type) == ("neurons", 3, experiment_pb2.CELL_TYPE_HX_NEURON)
    params = {p.name: list(p.values) for p in p0.parameters}
    assert params == {"leak_v_leak": [500, 600, 700], "leak_i_bias": [1022]}
    assert list(p0.circuits) == [10, 11, 12] and list(p1.circuits) == [5]
    assert list(p1.parameters) == []
    assert p2.cell_type == experiment_pb2.CELL_TYPE_SPIKE_SOURCE_ARRAY
    # one shared train; times outside [0, runtime) dropped
    assert [list(t.times_ms) for t in p2.spike_source_array.spike_times] == [[0.01, 0.02]]

    all_to_all, one_to_one, from_list = experiment.projections
    assert (all_to_all.pre_population, all_to_all.post_population) == (2, 0)
    assert all_to_all.receptor_type == experiment_pb2.RECEPTOR_TYPE_EXCITATORY
    assert sorted(zip(all_to_all.pre_indices, all_to_all.post_indices)) == [
        (0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    assert set(all_to_all.weights) == {31}
    # views map to indices in the root populations
    assert list(one_to_one.pre_indices) == [1] and list(one_to_one.post_indices) == [2]
    assert list(one_to_one.weights) == [-63]
    assert one_to_one.receptor_type == experiment_pb2.RECEPTOR_TYPE_INHIBITORY
    assert list(from_list.weights) == [100]

    recordings = {(r.population, r.observable): list(r.neurons) for r in experiment.recordings}
    # spike-source spikes are known on the host: not requested from the server
    assert recordings == {(0, experiment_pb2.OBSERVABLE_SPIKES): [1],
                          (0, experiment_pb2.OBSERVABLE_V): [1]}


def test_seeds_are_reproducible_with_rng_seed():
    seeds = []
    for _ in range(2):
        pynn_module.setup(rng_seed=1234)
        seeds.append([pynn_module.simulator.state.next_seed() for _ in range(3)])
        pynn_module.end()
    assert seeds[0] == seeds[1] and len(set(seeds[0])) == 3


def test_projection_errors(offline_pynn):
    pynn = offline_pynn
    neuron = pynn.Population(1, pynn.cells.HXNeuron())
    stim = pynn.Population(1, SpikeSourceArray(spike_times=[0.01]))
    with pytest.raises(PyNNConnectionError, match="positive"):
        pynn.Projection(stim, neuron, pynn.AllToAllConnector(),
                        synapse_type=StaticSynapse(weight=-5), receptor_type="excitatory")
    with pytest.raises(PyNNConnectionError, match="negative"):
        pynn.Projection(stim, neuron, pynn.AllToAllConnector(),
                        synapse_type=StaticSynapse(weight=5), receptor_type="inhibitory")
    with pytest.raises(ValueError, match="delay unequal 0"):
        pynn.Projection(stim, neuron, pynn.AllToAllConnector(),
                        synapse_type=StaticSynapse(weight=5, delay=1.0))
    with pytest.raises(PyNNConnectionError, match="on-chip neuron population"):
        pynn.Projection(neuron, stim, pynn.AllToAllConnector())
    with pytest.raises(PyNNConnectionError, match="receptor_type"):
        pynn.Projection(stim, neuron, pynn.AllToAllConnector(), receptor_type="gap")


def test_one_analog_observable_per_neuron(offline_pynn):
    pop = offline_pynn.Population(2, offline_pynn.cells.HXNeuron())
    with pytest.raises(RuntimeError, match="1 analog record type per neuron"):
        pop.record(["v", "exc_synin"])
    pop.record("v")
    with pytest.raises(RuntimeError, match="1 analog record type per neuron"):
        offline_pynn.PopulationView(pop, [0]).record("adaptation")
    offline_pynn.PopulationView(pop, [0]).record("spikes")


# -- neo output ------------------------------------------------------------------

def test_neo_structure(any_pynn):
    pynn = any_pynn
    pynn.setup()
    pop = pynn.Population(1, pynn.cells.HXNeuron(**SPIKING), label="lot")
    pop.record(["v", "spikes"])
    stim = pynn.Population(1, SpikeSourceArray(spike_times=[0.01, 0.03]), label="stim")
    stim.record("spikes")
    pynn.run(0.2)
    assert pynn.get_current_time() == pytest.approx(0.2)

    block = pop.get_data()
    assert isinstance(block, neo.Block) and len(block.segments) == 1
    segment = block.segments[0]
    assert segment.analogsignals == []
    (signal,) = segment.irregularlysampledsignals
    assert isinstance(signal, neo.IrregularlySampledSignal)
    assert signal.name == "v"
    assert signal.units == pq.dimensionless and signal.times.units == pq.ms
    assert signal.dtype == np.float32 and signal.shape[1] == 1
    times = signal.times.magnitude
    assert np.all(times == times.astype(np.float32))  # float32 sample times
    assert np.all(np.diff(times) > 0) and 0 <= times[0] and times[-1] <= 0.2
    assert np.all((signal.magnitude >= 0) & (signal.magnitude <= 1023))
    assert signal.annotations["source_population"] == "lot"
    assert signal.annotations["source_ids"] == [int(pop.all_cells[0])]
    assert signal.annotations["device"] == "madc"
    assert list(signal.array_annotations["channel_index"]) == [0]

    (train,) = segment.spiketrains
    assert isinstance(train, neo.SpikeTrain) and train.units == pq.ms
    assert train.t_start == 0 * pq.ms and train.t_stop == 0.2 * pq.ms
    assert train.annotations["source_population"] == "lot"
    assert train.annotations["source_id"] == int(pop.all_cells[0])
    assert train.annotations["source_index"] == 0
    assert len(train) > 0

    # the tutorial's plotting helper
    mem_v = pop.get_data("v").segments[-1].irregularlysampledsignals[0]
    assert mem_v.mean() > 0
    assert len(pop.get_data("v").segments[-1].spiketrains) == 0
    assert pop.get_data("spikes").segments[-1].irregularlysampledsignals == []
    assert pop.get_spike_counts() == {int(pop.all_cells[0]): len(train)}

    (source_train,) = stim.get_data("spikes").segments[0].spiketrains
    assert list(source_train.magnitude) == pytest.approx([0.01, 0.03])


def test_segments_after_reset(any_pynn):
    pynn = any_pynn
    pynn.setup()
    pop = pynn.Population(1, pynn.cells.HXNeuron(**SILENT))
    pop.record("v")
    pynn.run(0.05)
    pynn.reset()
    assert pynn.get_current_time() == 0
    pop.set(leak_v_leak=400)
    pynn.run(0.05)
    pynn.reset()
    pynn.run(0.1)
    block = pop.get_data("v")
    assert [s.name for s in block.segments] == ["segment000", "segment001", "segment002"]
    assert all(len(s.irregularlysampledsignals) == 1 for s in block.segments)
    last = block.segments[-1].irregularlysampledsignals[0]
    assert last.times[-1] > 0.05 * pq.ms


def test_population_views_like_fixed_pattern_tutorial(any_pynn):
    """The tutorial's third experiment: record one neuron of a population per run."""
    pynn = any_pynn
    pynn.setup()
    pop = pynn.Population(3, pynn.cells.HXNeuron(**SPIKING))
    for neuron_id in range(len(pop)):
        view = pynn.PopulationView(pop, [neuron_id])
        view.record(["v"])
        pynn.run(0.05)
        signal = view.get_data("v").segments[-1].irregularlysampledsignals[0]
        assert signal.annotations["source_ids"] == [int(pop.all_cells[neuron_id])]
        assert list(signal.array_annotations["channel_index"]) == [neuron_id]
        pynn.reset()
        pop.record(None)
    segments = pop.get_data("v").segments
    assert len(segments) == 3
    assert [s.irregularlysampledsignals[0].annotations["source_ids"][0] for s in segments] \
        == [int(c) for c in pop.all_cells]

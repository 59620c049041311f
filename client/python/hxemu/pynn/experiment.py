"""PyNN network <-> ``hxemu.v1`` messages.

:func:`build_experiment` turns the populations, projections and recorders of
the simulator state into one ``Experiment``; :class:`RunData` holds a
``Result`` in the form the recorders need (per neuron, in ms).
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Tuple

import numpy as np

from hxemu._proto import experiment_pb2

#: FPGA clock: timestamps are 8 ns ticks (125 MHz)
TICKS_PER_MS = 125_000.0

OBSERVABLES = {
    "spikes": experiment_pb2.OBSERVABLE_SPIKES,
    "v": experiment_pb2.OBSERVABLE_V,
    "exc_synin": experiment_pb2.OBSERVABLE_EXC_SYNIN,
    "inh_synin": experiment_pb2.OBSERVABLE_INH_SYNIN,
    "adaptation": experiment_pb2.OBSERVABLE_ADAPTATION,
}
VARIABLES = {value: key for key, value in OBSERVABLES.items()}
ANALOG_VARIABLES = ("v", "exc_synin", "inh_synin", "adaptation")


def ticks_to_ms(ticks) -> np.ndarray:
    """FPGA ticks -> ms (float64)."""
    return np.asarray(ticks, dtype=np.float64) / TICKS_PER_MS


def _population_index(state, population) -> int:
    try:
        return state.populations.index(population)
    except ValueError:
        raise RuntimeError(f"population {population.label!r} does not belong to "
                           "the current pynn.setup()") from None


def _assign_circuits(state, experiment):
    """Apply setup(neuronPermutation=...) to the HXNeuron populations."""
    permutation = state.neuron_permutation
    if permutation is None:
        return
    needed = sum(p.size for p in experiment.populations
                 if p.cell_type == experiment_pb2.CELL_TYPE_HX_NEURON)
    if needed > len(permutation):
        raise ValueError(f"Cannot register more than {len(permutation)} neuron "
                         f"circuits: neuronPermutation has {len(permutation)} "
                         f"entries, the network has {needed} HXNeurons")
    position = 0
    for population in experiment.populations:
        if population.cell_type == experiment_pb2.CELL_TYPE_HX_NEURON:
            population.circuits.extend(permutation[position:position + population.size])
            position += population.size


def build_experiment(state, runtime_ms: float, seed: int) -> experiment_pb2.Experiment:
    """The Experiment for the current network and ``runtime_ms``."""
    experiment = experiment_pb2.Experiment(runtime_ms=runtime_ms, seed=seed)
    if state.chip_id is not None:
        experiment.chip_id = state.chip_id
    for population in state.populations:
        message = experiment.populations.add(label=population.label or "",
                                             size=population.size)
        population.celltype.to_proto(population, message, runtime_ms)
    _assign_circuits(state, experiment)
    for projection in state.projections:
        projection.to_proto(experiment.projections.add(), state)
    for recorder in sorted(state.recorders,
                           key=lambda r: _population_index(state, r.population)):
        population = recorder.population
        index = _population_index(state, population)
        if not population.celltype.records_on_chip:
            continue  # spike sources: their spikes are known on the host
        for variable in sorted(recorder.recorded, key=list(OBSERVABLES).index):
            ids = recorder.recorded[variable]
            if not ids:
                continue
            neurons = sorted(int(i) for i in population.id_to_index(list(ids)))
            message = experiment.recordings.add(population=index,
                                                observable=OBSERVABLES[variable])
            if len(neurons) != population.size:
                message.neurons.extend(neurons)
    return experiment


@dataclasses.dataclass
class RunData:
    """The data of one run, keyed by (population index, neuron index)."""

    runtime_ms: float
    #: (population, neuron) -> spike times [ms], float64
    spikes: Dict[Tuple[int, int], np.ndarray]
    #: (population, neuron, variable) -> (times [ms], ADC codes), float32
    traces: Dict[Tuple[int, int, str], Tuple[np.ndarray, np.ndarray]]
    chip_id: int = 0

    @classmethod
    def from_result(cls, result: experiment_pb2.Result, state=None,
                    runtime_ms: float = None) -> "RunData":
        spikes = {}
        for train in result.spike_trains:
            key = (train.population, train.neuron)
            times = ticks_to_ms(train.times_ticks)
            spikes[key] = np.concatenate([spikes[key], times]) if key in spikes else times
        traces = {}
        for trace in result.traces:
            variable = VARIABLES.get(trace.observable)
            if variable is None or variable == "spikes":
                continue
            times = ticks_to_ms(trace.times_ticks).astype(np.float32)
            codes = np.asarray(trace.codes, dtype=np.float32)
            traces[(trace.population, trace.neuron, variable)] = (times, codes)
        runtime = result.runtime_ms or runtime_ms
        data = cls(runtime_ms=runtime, spikes=spikes, traces=traces,
                   chip_id=result.chip_id)
        if state is not None:
            data._add_source_spikes(state, runtime_ms or runtime)
        return data

    def _add_source_spikes(self, state, runtime_ms: float):
        """Spike sources emit exactly their given times (on the 8 ns grid)."""
        for index, population in enumerate(state.populations):
            source_times = getattr(population.celltype, "host_spike_times", None)
            if source_times is None:
                continue
            for neuron, times in enumerate(source_times(population, runtime_ms)):
                self.spikes[(index, neuron)] = times

    def spike_times(self, population: int, neuron: int) -> np.ndarray:
        return self.spikes.get((population, neuron), np.zeros(0))

    def trace(self, population: int, neuron: int, variable: str):
        return self.traces.get((population, neuron, variable))

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


#: neuron columns per row; MADC pairs need columns of different parity
NUM_NEURON_COLUMNS = 256


def _circuits(experiment) -> Dict[int, list]:
    """population index -> circuit of each neuron, as the server places them
    (explicit circuits, else the lowest free ones in creation order)."""
    used = {c for p in experiment.populations for c in p.circuits}
    free = (c for c in range(512) if c not in used)
    result = {}
    for index, population in enumerate(experiment.populations):
        if population.cell_type != experiment_pb2.CELL_TYPE_HX_NEURON:
            continue
        if population.circuits:
            result[index] = list(population.circuits)
        else:
            result[index] = [next(free, -1) for _ in range(population.size)]
    return result


def check_madc(experiment) -> None:
    """pynn_brainscales' MADC limits, before anything is submitted: at most
    two analog recordings, on neurons in columns of different parity."""
    analog = []
    for recording in experiment.recordings:
        if recording.observable == experiment_pb2.OBSERVABLE_SPIKES:
            continue
        size = experiment.populations[recording.population].size
        for neuron in (recording.neurons or range(size)):
            if (recording.population, neuron) not in analog:
                analog.append((recording.population, neuron))
    if len(analog) > 2:
        raise RuntimeError("MADC recording supports recording at most two neurons.")
    if len(analog) == 2:
        circuits = _circuits(experiment)
        first, second = (circuits[p][n] for p, n in analog)
        if first == second:
            raise RuntimeError("MADC recording neurons are the same.")
        if (first % NUM_NEURON_COLUMNS) % 2 == (second % NUM_NEURON_COLUMNS) % 2:
            raise RuntimeError(
                "MADC recording neurons are required to reside in columns with "
                f"unique parity (even/odd). (circuits {first} and {second})")


def build_experiment(state, runtime_ms: float, seed: int,
                     t_start: float = 0.0) -> experiment_pb2.Experiment:
    """The Experiment for the current network and the run [t_start, t_start +
    runtime_ms) of the current segment (spike source times relative to
    t_start)."""
    experiment = experiment_pb2.Experiment(runtime_ms=runtime_ms, seed=seed)
    if state.chip_id is not None:
        experiment.chip_id = state.chip_id
    for population in state.populations:
        message = experiment.populations.add(label=population.label or "",
                                             size=population.size)
        population.celltype.to_proto(population, message, runtime_ms, t_start=t_start)
    _assign_circuits(state, experiment)
    for projection in state.projections:
        projection.to_proto(experiment.projections.add(), state)
    for recorder in sorted(state.recorders,
                           key=lambda r: _population_index(state, r.population)):
        population = recorder.population
        index = _population_index(state, population)
        if not (population.celltype.records_on_chip or
                getattr(population.celltype, "spikes_from_server", False)):
            continue  # spike arrays: their spikes are known on the host
        for variable in sorted(recorder.recorded, key=list(OBSERVABLES).index):
            ids = recorder.recorded[variable]
            if not ids:
                continue
            neurons = sorted(int(i) for i in population.id_to_index(list(ids)))
            message = experiment.recordings.add(population=index,
                                                observable=OBSERVABLES[variable])
            if len(neurons) != population.size:
                message.neurons.extend(neurons)
    check_madc(experiment)
    return experiment


def host_source_spikes(state, runtime_ms: float, t_start: float = 0.0):
    """(population, neuron) -> absolute spike times of the spike arrays in
    [t_start, t_start + runtime_ms)."""
    spikes = {}
    for index, population in enumerate(state.populations):
        source_times = getattr(population.celltype, "host_spike_times", None)
        if source_times is None:
            continue
        for neuron, times in enumerate(source_times(population, runtime_ms, t_start)):
            spikes[(index, neuron)] = times
    return spikes


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
        self.spikes.update(host_source_spikes(state, runtime_ms))

    def shifted(self, offset_ms: float) -> "RunData":
        """The same data with all times moved by ``offset_ms``."""
        return RunData(
            runtime_ms=self.runtime_ms,
            spikes={k: v + offset_ms for k, v in self.spikes.items()},
            traces={k: ((t.astype(np.float64) + offset_ms).astype(np.float32), c)
                    for k, (t, c) in self.traces.items()},
            chip_id=self.chip_id)

    @classmethod
    def concatenate(cls, parts) -> "RunData":
        """Data of consecutive runs (already shifted to their t_start)."""
        spikes, traces = {}, {}
        for part in parts:
            for key, times in part.spikes.items():
                spikes[key] = np.concatenate([spikes[key], times]) if key in spikes \
                    else times
            for key, (times, codes) in part.traces.items():
                if key in traces:
                    old_times, old_codes = traces[key]
                    traces[key] = (np.concatenate([old_times, times]),
                                   np.concatenate([old_codes, codes]))
                else:
                    traces[key] = (times, codes)
        return cls(runtime_ms=sum(p.runtime_ms for p in parts), spikes=spikes,
                   traces=traces, chip_id=parts[0].chip_id if parts else 0)

    def spike_times(self, population: int, neuron: int) -> np.ndarray:
        return self.spikes.get((population, neuron), np.zeros(0))

    def trace(self, population: int, neuron: int, variable: str):
        return self.traces.get((population, neuron, variable))

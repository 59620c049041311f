"""PyNN network <-> ``hxemu.v1`` messages.

:func:`build_experiment` turns the populations, projections and recorders of
the simulator state into one ``Experiment``; :class:`RunData` holds a
``Result`` in the form the recorders need (per neuron, in ms).
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Tuple

import numpy as np

from hxemu import _parameters
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

#: period of record(..., device="cadc") reads [ms hardware] (1 us): the
#: emulated CADC reads every placed membrane at once, at 0, 1, 2, ... us.
#: (On the chip the PPU program reading the CADC sets the period.)
CADC_PERIOD_MS = 1e-3
#: the server's limit of CADC reads per job (docs/emulator-model.md,
#: max_cadc_reads): with one read per CADC_PERIOD_MS, 100 ms runtime
MAX_CADC_READS = 100_000


def cadc_times(runtime_ms: float) -> np.ndarray:
    """Read times [ms] of a CADC recording of ``runtime_ms``: every
    CADC_PERIOD_MS from 0, all < runtime_ms."""
    count = int(np.ceil(runtime_ms / CADC_PERIOD_MS - 1e-9))
    if count > MAX_CADC_READS:
        raise ValueError(
            f'record(..., device="cadc"): a run of {runtime_ms:g} ms needs {count} '
            f"CADC reads (one per {CADC_PERIOD_MS * 1e3:g} us), more than the "
            f"{MAX_CADC_READS} per run hxemu allows; record at most "
            f"{MAX_CADC_READS * CADC_PERIOD_MS:g} ms per run (or use the MADC)")
    times = np.arange(count, dtype=np.float64) * CADC_PERIOD_MS
    return times[times < runtime_ms]


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


def placed_circuits(experiment) -> Dict[int, list]:
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
        circuits = placed_circuits(experiment)
        first, second = (circuits[p][n] for p, n in analog)
        if first == second:
            raise RuntimeError("MADC recording neurons are the same.")
        if (first % NUM_NEURON_COLUMNS) % 2 == (second % NUM_NEURON_COLUMNS) % 2:
            raise RuntimeError(
                "MADC recording neurons are required to reside in columns with "
                f"unique parity (even/odd). (circuits {first} and {second})")


#: CalibHXNeuronCuba/Coba parameter -> hxemu.v1.CalibrationTargets field
CALIBRATION_TARGET_FIELDS = {
    "v_rest": "leak", "v_reset": "reset", "v_thresh": "threshold",
    "tau_m": "tau_mem_us", "tau_syn_E": "tau_syn_exc_us", "tau_syn_I": "tau_syn_inh_us",
    "cm": "membrane_capacitance", "tau_refrac": "refractory_time_us",
    "i_synin_gm_E": "i_synin_gm_exc", "i_synin_gm_I": "i_synin_gm_inh",
    "synapse_dac_bias": "synapse_dac_bias",
    "e_rev_E": "e_coba_reversal_exc", "e_rev_I": "e_coba_reversal_inh",
}


def neuron_targets(state, population):
    """Per neuron of a CalibHXNeuronCuba/Coba population: its targets
    (parameter name -> value; setup(injected_calib_target=...) fills what
    the population does not set explicitly)."""
    injected = state.injected_calib_target or {}
    explicit = population.explicit_parameter_mask
    names = list(population.celltype.default_parameters)
    columns = {}
    for name in names:
        values = np.broadcast_to(np.asarray(population._parameters[name],  # pylint: disable=protected-access
                                            dtype=np.float64), (population.size,))
        if name in injected:
            values = np.where(explicit(name), values, float(injected[name]))
        columns[name] = values
    return [{name: float(columns[name][i]) for name in names}
            for i in range(population.size)]


def targets_message(targets: dict):
    """hxemu.v1.CalibrationTargets of one neuron's targets."""
    from hxemu.v1 import calibration_pb2  # pylint: disable=import-outside-toplevel
    from google.protobuf.descriptor import FieldDescriptor  # pylint: disable=import-outside-toplevel
    message = calibration_pb2.CalibrationTargets()
    for name, value in targets.items():
        field = CALIBRATION_TARGET_FIELDS[name]
        integral = message.DESCRIPTOR.fields_by_name[field].cpp_type != \
            FieldDescriptor.CPPTYPE_DOUBLE
        setattr(message, field, int(round(value)) if integral else float(value))
    return message


def _apply_initial_config(state, experiment):
    """With setup(initial_config=...): the server gives every HXNeuron
    parameter a population does not send the calibrated value of the
    neuron's circuit. Parameters the user set for some neurons only are sent
    per neuron with the calibrated values (as the server would apply them)
    for the others. And ``Population.get()`` of parameters the user did not
    set returns the calibrated values afterwards, the values the run uses
    (pynn_brainscales, too, knows them only after mapping)."""
    circuits = placed_circuits(experiment)
    table = {info.name: info.default for info in
             _parameters.neuron_parameters().values()}
    entries = {c.circuit: {p.name: p.values[0] for p in c.parameters if p.values}
               for c in state.initial_config.circuits}
    calibrated_names = {name for entry in entries.values() for name in entry}
    for index, population in enumerate(state.populations):
        if index not in circuits or getattr(population.celltype, "calibrated_targets",
                                            False):
            continue
        message = experiment.populations[index]
        placed = [entries.get(c, {}) for c in circuits[index]]
        for name in calibrated_names & set(population._parameters):  # pylint: disable=protected-access
            mask = population.explicit_parameter_mask(name)
            if mask.all():
                continue  # the user's values (sent by HXNeuron.to_proto)
            current = np.broadcast_to(np.asarray(population._parameters[name],  # pylint: disable=protected-access
                                                 dtype=np.float64), (population.size,))
            calibrated = np.array([entry.get(name, table[name]) for entry in placed],
                                  dtype=np.float64)
            values = np.where(mask, current, calibrated)
            if mask.any():
                entry = next(p for p in message.parameters if p.name == name)
                del entry.values[:]
                entry.values.extend(int(v) for v in values)
            if isinstance(population.celltype.default_parameters.get(name), bool):
                values = values.astype(bool)
            population._parameters[name] = values  # pylint: disable=protected-access


def _apply_calibrations(state, experiment):
    """CalibHXNeuronCuba/Coba populations: place them explicitly (as the
    server would) and configure each neuron with the parameters of its
    circuit from the server's calibration for the neuron's targets."""
    calibrated = [(index, population) for index, population in enumerate(state.populations)
                  if getattr(population.celltype, "calibrated_targets", False)]
    if not calibrated:
        return
    circuits = placed_circuits(experiment)
    biases = {}  # synapse_dac_bias -> label of a population that wants it
    for index, population in calibrated:
        message = experiment.populations[index]
        placed = circuits[index]
        if -1 in placed:
            raise ValueError("Cannot register more than 512 neuron circuits.")
        del message.circuits[:]
        message.circuits.extend(placed)
        targets = neuron_targets(state, population)
        for target in targets:
            biases.setdefault(int(round(target["synapse_dac_bias"])),
                              population.label)
        per_neuron = []
        for neuron, circuit in enumerate(placed):
            calibration = state.calibration(targets_message(targets[neuron]))
            if experiment.HasField("chip_id") and experiment.chip_id != calibration.chip_id:
                raise RuntimeError(
                    f"the calibration of {population.celltype.__class__.__name__} "
                    f"population {population.label!r} is for chip "
                    f"{calibration.chip_id}, the experiment runs on chip "
                    f"{experiment.chip_id}")
            experiment.chip_id = calibration.chip_id
            entry = state.circuit_calibration(calibration, circuit)
            per_neuron.append({p.name: int(p.values[0]) for p in entry.parameters})
        names = list(dict.fromkeys(name for hw in per_neuron for name in hw))
        del message.parameters[:]
        for name in names:
            values = [hw.get(name, 0) for hw in per_neuron]
            parameter = message.parameters.add(name=name)
            parameter.values.extend(values[:1] if len(set(values)) == 1 else values)
        population.celltype._calib_target = targets  # pylint: disable=protected-access
        population.celltype._calib_hwparams = per_neuron  # pylint: disable=protected-access
    # The synapse DAC bias is one analog cell for the whole chip: the run
    # carries the bias the calibrations matched i_synin_gm at.
    if len(biases) > 1:
        raise ValueError(
            "synapse_dac_bias is one setting per chip, but the calibrated "
            "populations ask for " + ", ".join(
                f"{bias} ({label!r})" for bias, label in sorted(biases.items())))
    experiment.synapse_dac_bias = next(iter(biases))


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
    if state.initial_config is not None:
        experiment.initial_config.CopyFrom(state.initial_config)
        _apply_initial_config(state, experiment)
    _apply_calibrations(state, experiment)
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
            # analog variables: only what the MADC records (the CADC reads
            # every placed neuron anyway)
            ids = recorder.madc_ids[variable] if variable in ANALOG_VARIABLES \
                else recorder.recorded[variable]
            if not ids:
                continue
            neurons = sorted(int(i) for i in population.id_to_index(list(ids)))
            message = experiment.recordings.add(population=index,
                                                observable=OBSERVABLES[variable])
            if len(neurons) != population.size:
                message.neurons.extend(neurons)
    if np.isfinite(runtime_ms) and any(r.cadc_ids for r in state.recorders):
        experiment.cadc.times_ms.extend(cadc_times(runtime_ms).tolist())
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
    #: (population, neuron) -> (CADC read times [ms], 8-bit codes), float32,
    #: for every placed HX neuron when the run read the CADC
    cadc: Dict[Tuple[int, int], Tuple[np.ndarray, np.ndarray]] = \
        dataclasses.field(default_factory=dict)

    @staticmethod
    def cadc_from_result(result: experiment_pb2.Result, experiment):
        """(population, neuron) -> (times, codes) of the result's CADC reads;
        the circuits are mapped back with the placement of ``experiment``."""
        if not result.cadc_reads:
            return {}
        neuron_of = {circuit: (population, neuron)
                     for population, circuits in placed_circuits(experiment).items()
                     for neuron, circuit in enumerate(circuits)}
        circuits = list(result.cadc_circuits)
        if sorted(neuron_of) != circuits:
            raise RuntimeError(
                "hxemu server placed the neurons differently from the client "
                f"(CADC circuits {circuits[:8]}..., client {sorted(neuron_of)[:8]}...)")
        times = ticks_to_ms([read.time_ticks for read in result.cadc_reads]).astype(
            np.float32)
        codes = np.array([read.codes for read in result.cadc_reads],
                         dtype=np.float32).reshape(len(times), len(circuits))
        return {neuron_of[circuit]: (times, codes[:, column])
                for column, circuit in enumerate(circuits)}

    @classmethod
    def from_result(cls, result: experiment_pb2.Result, state=None,
                    runtime_ms: float = None, experiment=None) -> "RunData":
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
                   chip_id=result.chip_id,
                   cadc={} if experiment is None else
                   cls.cadc_from_result(result, experiment))
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
            chip_id=self.chip_id,
            cadc={k: ((t.astype(np.float64) + offset_ms).astype(np.float32), c)
                  for k, (t, c) in self.cadc.items()})

    @classmethod
    def concatenate(cls, parts) -> "RunData":
        """Data of consecutive runs (already shifted to their t_start)."""
        spikes, traces, cadc = {}, {}, {}
        for part in parts:
            for key, times in part.spikes.items():
                spikes[key] = np.concatenate([spikes[key], times]) if key in spikes \
                    else times
            for joined, samples in ((traces, part.traces), (cadc, part.cadc)):
                for key, (times, codes) in samples.items():
                    if key in joined:
                        old_times, old_codes = joined[key]
                        joined[key] = (np.concatenate([old_times, times]),
                                       np.concatenate([old_codes, codes]))
                    else:
                        joined[key] = (times, codes)
        return cls(runtime_ms=sum(p.runtime_ms for p in parts), spikes=spikes,
                   traces=traces, chip_id=parts[0].chip_id if parts else 0, cadc=cadc)

    def spike_times(self, population: int, neuron: int) -> np.ndarray:
        return self.spikes.get((population, neuron), np.zeros(0))

    def trace(self, population: int, neuron: int, variable: str):
        return self.traces.get((population, neuron, variable))

    def cadc_trace(self, population: int, neuron: int):
        return self.cadc.get((population, neuron))

"""Cell types of the hxemu PyNN backend.

``HXNeuron`` takes the raw hardware parameters of one neuron circuit, exactly
as pynn_brainscales' ``HXNeuron`` (the flattened lola ``AtomicNeuron``). Names,
kinds, ranges and defaults come from the emulator's parameter table
(``hxemu/v1/neuron_parameters.json``, generated from the C++ table).
"""

from __future__ import annotations

from typing import List

import numpy as np
from pyNN.parameters import Sequence
from pyNN.standardmodels import StandardCellType, build_translations
from pyNN.standardmodels import cells as pynn_cells

from hxemu import _parameters
from hxemu._proto import experiment_pb2

_TABLE = _parameters.neuron_parameters()


def _default_value(info: _parameters.ParameterInfo):
    # as pynn_brainscales: bools stay bool, everything else is a float
    return bool(info.default) if info.is_bool else float(info.default)


def _is_plain_value(value) -> bool:
    """A value that can be checked before the population exists."""
    if isinstance(value, (bool, int, float, np.number, np.bool_)):
        return True
    if isinstance(value, (list, tuple, np.ndarray)):
        try:
            return np.asarray(value).dtype.kind in "biuf"
        except (TypeError, ValueError):
            return False
    return False


class HXNeuron(StandardCellType):
    """One neuron circuit configured by raw hardware parameters.

    All parameters are integers in hardware units (CapMem DAC LSB, counter
    values) or booleans; see :meth:`get_parameter_names`, :meth:`parameter_info`
    and :meth:`parameter_range`. Defaults to a silent neuron. Recorded analog
    values are raw MADC codes (dimensionless).
    """

    default_parameters = {name: _default_value(info) for name, info in _TABLE.items()}
    translations = build_translations(*((name, name) for name in default_parameters))
    units = {name: "dimensionless" for name in default_parameters}
    units.update({"v": "dimensionless", "exc_synin": "dimensionless",
                  "inh_synin": "dimensionless", "adaptation": "dimensionless"})
    recordable = ["spikes", "v", "exc_synin", "inh_synin", "adaptation"]
    receptor_types = ["excitatory", "inhibitory"]
    conductance_based = False
    injectable = False
    records_on_chip = True

    def __init__(self, **parameters):
        for name, value in parameters.items():
            if name in _TABLE and _is_plain_value(value):
                _TABLE[name].validate(value)
        super().__init__(**parameters)

    @staticmethod
    def parameter_info(name: str) -> _parameters.ParameterInfo:
        """Kind, range, default, unit and description of one parameter."""
        return _TABLE[name]

    @staticmethod
    def parameter_range(name: str):
        """(min, max) of one parameter."""
        info = _TABLE[name]
        return info.min, info.max

    @staticmethod
    def validate_native(name: str, values) -> np.ndarray:
        """Range-check evaluated values of ``name``; returns them as ints."""
        info = _TABLE.get(name)
        return values if info is None else info.validate(values)

    @staticmethod
    def to_proto(population, message: experiment_pb2.Population, runtime_ms: float,
                 t_start: float = 0.0):  # pylint: disable=unused-argument
        message.cell_type = experiment_pb2.CELL_TYPE_HX_NEURON
        parameters = population._parameters  # pylint: disable=protected-access
        for name, info in _TABLE.items():
            values = info.validate(parameters[name]).reshape(-1)
            if np.all(values == info.default):
                continue
            entry = message.parameters.add(name=name)
            if np.all(values == values[0]):
                entry.values.append(int(values[0]))
            else:
                entry.values.extend(int(v) for v in values)


class SpikeSourceArray(pynn_cells.SpikeSourceArray):
    __doc__ = pynn_cells.SpikeSourceArray.__doc__ + """

    Spike times are in ms of hardware time. Times outside [0, runtime) are
    not sent (as in pynn_brainscales)."""

    translations = build_translations(("spike_times", "spike_times"))
    records_on_chip = False

    @staticmethod
    def _times(population, runtime_ms: float, t_start: float = 0.0) -> List[np.ndarray]:
        """Per neuron: the spike times in [t_start, t_start + runtime_ms),
        relative to t_start, sorted."""
        result = []
        for sequence in population._parameters["spike_times"]:  # pylint: disable=protected-access
            times = np.asarray(sequence.value if isinstance(sequence, Sequence)
                               else sequence, dtype=np.float64).reshape(-1)
            if not np.all(np.isfinite(times)):
                raise ValueError(f"SpikeSourceArray {population.label!r}: spike "
                                 "times must be finite")
            times = times[(times >= t_start) & (times < t_start + runtime_ms)] - t_start
            result.append(np.sort(times))
        return result

    @classmethod
    def to_proto(cls, population, message: experiment_pb2.Population, runtime_ms: float,
                 t_start: float = 0.0):
        message.cell_type = experiment_pb2.CELL_TYPE_SPIKE_SOURCE_ARRAY
        trains = cls._times(population, runtime_ms, t_start)
        shared = all(np.array_equal(trains[0], t) for t in trains[1:])
        for times in trains[:1] if shared else trains:
            message.spike_source_array.spike_times.add().times_ms.extend(times.tolist())

    @classmethod
    def host_spike_times(cls, population, runtime_ms: float,
                         t_start: float = 0.0) -> List[np.ndarray]:
        """The spikes the source emits in [t_start, t_start + runtime_ms), on
        the 8 ns FPGA time grid of that run, as absolute times [ms]."""
        return [t_start + np.round(t * 125_000.0) / 125_000.0
                for t in cls._times(population, runtime_ms, t_start)]


def _uniform(population, name: str) -> float:
    values = np.asarray(population._parameters[name], dtype=np.float64)  # pylint: disable=protected-access
    values = values.reshape(-1)
    if not np.all(np.isfinite(values)) or np.any(values < 0):
        raise ValueError(f"SpikeSourcePoisson {population.label!r}: {name} must "
                         f"be finite and >= 0, got {values.tolist()}")
    if not np.all(values == values[0]):
        raise NotImplementedError(
            f"SpikeSourcePoisson {population.label!r}: {name} must be the same "
            "for all neurons of a population in hxemu (use one population per "
            "value)")
    return float(values[0])


class SpikeSourcePoisson(pynn_cells.SpikeSourcePoisson):
    __doc__ = pynn_cells.SpikeSourcePoisson.__doc__ + """

    ``start`` and ``duration`` in ms of hardware time, ``rate`` in Hz of
    hardware time (e.g. 20e3). Each neuron fires an independent Poisson train
    in [start, start + duration). The trains are generated on the server from
    the job's seed: ``pynn.setup(rng_seed=...)`` makes them reproducible
    (pynn_brainscales draws them from numpy's global RNG instead). rate,
    start and duration must be the same for all neurons of a population.
    Their spikes can be recorded ("spikes")."""

    translations = build_translations(("rate", "rate"), ("start", "start"),
                                      ("duration", "duration"))
    records_on_chip = False
    #: recorded spikes come from the server (generated there)
    spikes_from_server = True

    @staticmethod
    def window(population, runtime_ms: float, t_start: float = 0.0):
        """(rate [Hz], start, duration [ms]) for the run [t_start, t_start +
        runtime_ms), in that run's time; rate 0 if nothing falls into it."""
        rate = _uniform(population, "rate")
        start = _uniform(population, "start")
        duration = _uniform(population, "duration")
        begin = max(start, t_start)
        end = min(start + duration, t_start + runtime_ms)
        if rate == 0 or end <= begin:
            return 0.0, 0.0, 0.0
        return rate, begin - t_start, end - begin

    @classmethod
    def to_proto(cls, population, message: experiment_pb2.Population, runtime_ms: float,
                 t_start: float = 0.0):
        message.cell_type = experiment_pb2.CELL_TYPE_SPIKE_SOURCE_POISSON
        rate, start, duration = cls.window(population, runtime_ms, t_start)
        message.spike_source_poisson.rate_hz = rate
        message.spike_source_poisson.start_ms = start
        message.spike_source_poisson.duration_ms = duration

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


#: pynn_brainscales' generic keys of every on-chip cell type (its
#: NeuronCellType): which neuron observable a plasticity rule reads
#: (lola ReadoutSource: 0 = membrane) and whether the rule reads it. hxemu
#: has no PPU and no plasticity rules, so only the defaults are accepted.
PLASTICITY_PARAMETERS = {
    "plasticity_rule_readout_source": 0.0,
    "plasticity_rule_enable_readout_source": False,
}


def check_plasticity_parameter(name: str, values):
    """NotImplementedError for a non-default value of a plasticity key."""
    default = PLASTICITY_PARAMETERS[name]
    array = np.asarray(values)
    if array.dtype == object or not np.all(array == default):
        raise NotImplementedError(
            f"HXNeuron parameter '{name}' = {values!r}: hxemu emulates no "
            "plasticity processor (PPU), so plasticity rules cannot read a "
            f"neuron observable; only the default {default!r} is supported")


class HXNeuron(StandardCellType):
    """One neuron circuit configured by raw hardware parameters.

    All parameters are integers in hardware units (CapMem DAC LSB, counter
    values) or booleans; see :meth:`get_parameter_names`, :meth:`parameter_info`
    and :meth:`parameter_range`. Defaults to a silent neuron. Recorded analog
    values are raw MADC codes (dimensionless).
    """

    default_parameters = {name: _default_value(info) for name, info in _TABLE.items()}
    default_parameters.update(PLASTICITY_PARAMETERS)
    translations = build_translations(*((name, name) for name in default_parameters))
    units = {name: "dimensionless" for name in default_parameters}
    units.update({"v": "dimensionless", "exc_synin": "dimensionless",
                  "inh_synin": "dimensionless", "adaptation": "dimensionless"})
    recordable = ["spikes", "v", "exc_synin", "inh_synin", "adaptation"]
    receptor_types = ["excitatory", "inhibitory"]
    conductance_based = False
    injectable = False
    records_on_chip = True

    def __init__(self, plasticity_rule=None, **parameters):
        if plasticity_rule is not None:
            # pynn_brainscales' NeuronCellType argument; no PlasticityRule
            # can exist on hxemu (its constructor raises)
            raise NotImplementedError("HXNeuron(plasticity_rule=...): plasticity "
                                      "rules are not supported by hxemu (no PPU)")
        for name, value in parameters.items():
            if name in _TABLE and _is_plain_value(value):
                _TABLE[name].validate(value)
            elif name in PLASTICITY_PARAMETERS and _is_plain_value(value):
                check_plasticity_parameter(name, value)
        super().__init__(**parameters)
        #: parameters given by the user (they win over a calibration)
        self.explicit_parameters = frozenset(parameters)

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
        """Range-check evaluated values of ``name``; returns them as ints
        (the plasticity keys: NotImplementedError unless default)."""
        if name in PLASTICITY_PARAMETERS:
            check_plasticity_parameter(name, values)
            return values
        info = _TABLE.get(name)
        return values if info is None else info.validate(values)

    @staticmethod
    def to_proto(population, message: experiment_pb2.Population, runtime_ms: float,
                 t_start: float = 0.0):  # pylint: disable=unused-argument
        """The population's parameters that differ from what the server
        would use anyway.

        Without a calibration (``setup(initial_config=...)``) those are the
        values that differ from the table defaults. With one, the server
        gives every parameter the population does not send the calibrated
        value of the neuron's circuit, so every parameter the user set
        (constructor or ``set()``) is sent, even when it equals the table
        default. With ``setup(enable_neuron_bypass=True)`` the bypass
        defaults (:data:`BYPASS_DEFAULTS`) replace the table defaults of
        parameters the user did not set.
        """
        message.cell_type = experiment_pb2.CELL_TYPE_HX_NEURON
        state = population._simulator.state  # pylint: disable=protected-access
        calibrated = getattr(state, "initial_config", None) is not None
        bypass = getattr(state, "neuron_bypass", False)
        parameters = population._parameters  # pylint: disable=protected-access
        explicit = population.explicit_parameter_mask
        for name, info in _TABLE.items():
            values = info.validate(parameters[name]).reshape(-1)
            mask = explicit(name)
            if bypass and name in BYPASS_DEFAULTS:
                values = np.where(mask, values, BYPASS_DEFAULTS[name])
            elif calibrated:
                if not mask.any():
                    continue  # the circuit's calibrated value
                # set for some neurons only: the others get their circuit's
                # calibrated value filled in by hxemu.pynn.experiment
            elif np.all(values == info.default):
                continue
            entry = message.parameters.add(name=name)
            if np.all(values == values[0]):
                entry.values.append(int(values[0]))
            else:
                entry.values.extend(int(v) for v in values)


#: setup(enable_neuron_bypass=True): lola's Chip.default_neuron_bypass —
#: no spike comparator; every input event makes the neuron fire
BYPASS_DEFAULTS = {
    "threshold_enable": 0,
    "event_routing_enable_bypass_excitatory": 1,
    "event_routing_enable_bypass_inhibitory": 1,
}


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


def _uniform(population, name: str, kind: str = "SpikeSourcePoisson") -> float:
    values = np.asarray(population._parameters[name], dtype=np.float64)  # pylint: disable=protected-access
    values = values.reshape(-1)
    if not np.all(np.isfinite(values)) or np.any(values < 0):
        raise ValueError(f"{kind} {population.label!r}: {name} must "
                         f"be finite and >= 0, got {values.tolist()}")
    if not np.all(values == values[0]):
        raise NotImplementedError(
            f"{kind} {population.label!r}: {name} must be the same "
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


# -- on-chip Poisson sources ---------------------------------------------------

#: background spike source sets: one per PADI bus (each uses one source per
#: hemisphere), so at most 4 SpikeSourcePoissonOnChip populations
NUM_BACKGROUND_SOURCE_SETS = 4
#: default setup(backgroundPermutation=...) of pynn_brainscales
DEFAULT_BACKGROUND_PERMUTATION = (3, 2, 1, 0)
#: neurons one background source serves (8-bit label randomisation mask)
MAX_BACKGROUND_SOURCE_SIZE = 256
#: clock of the background spike sources [Hz] (phy reference clock / 2)
BACKGROUND_SOURCE_CLOCK_HZ = 250e6


def background_source_settings(rate_hz: float, size: int):
    """(Rate, Period) register values of one on-chip background source that
    serves ``size`` neurons at ``rate_hz`` each, as pynn_brainscales computes
    them: spike with probability (Rate + 1) / 256 every Period + 1 cycles of
    the 250 MHz clock, the label randomised over the population."""
    hwrate = rate_hz * size
    rate = round(255 * hwrate / BACKGROUND_SOURCE_CLOCK_HZ) if hwrate > 0 else 0
    if not 0 < hwrate <= BACKGROUND_SOURCE_CLOCK_HZ or rate < 0 or rate > 255:
        raise ValueError(
            "The chosen Poisson rate can not be realized on hardware: rate x "
            f"population size = {hwrate:g} Hz must be in (0, "
            f"{BACKGROUND_SOURCE_CLOCK_HZ:g}] Hz")
    period = round(BACKGROUND_SOURCE_CLOCK_HZ / hwrate * (rate + 1) / 256) - 1
    if not 0 <= period <= 0xFFFF:
        raise ValueError(
            "The chosen Poisson rate can not be realized on hardware: "
            f"{rate_hz:g} Hz per neuron x {size} neurons needs a period of "
            f"{period} cycles, the source supports 0..65535")
    return rate, period


class SpikeSourcePoissonOnChip(StandardCellType):
    """Spike source generating spikes according to a Poisson process on the
    chip (a background spike source), as pynn_brainscales'
    ``SpikeSourcePoissonOnChip(rate, seed)``.

    ``rate`` [Hz hardware] and ``seed`` must be the same for all neurons of
    the population; rate x size is limited by the 250 MHz source clock, the
    size by the 8-bit label randomisation (256); at most 4 such populations
    (``setup(backgroundPermutation=...)`` is checked; the PADI bus it picks
    does not change the emulated result). The emulated source draws its
    spikes from ``seed``, independent of the job's seed (reproducible); they
    can be recorded ("spikes", as in pynn_brainscales' current release).
    """

    default_parameters = {"rate": 1.0, "seed": 0}
    translations = build_translations(("rate", "rate"), ("seed", "seed"))
    units = {"rate": "Hz", "seed": "dimensionless"}
    recordable = ["spikes"]
    receptor_types = ()
    records_on_chip = False
    #: recorded spikes come from the server (generated there)
    spikes_from_server = True

    def __init__(self, rate, seed):
        super().__init__(rate=rate, seed=seed)

    def can_record(self, variable: str, location=None) -> bool:  # pylint: disable=unused-argument
        return variable in self.recordable

    @staticmethod
    def settings(population):
        """(rate [Hz], seed, (Rate, Period)) of the population's source."""
        rate = _uniform(population, "rate", "SpikeSourcePoissonOnChip")
        seed = _uniform(population, "seed", "SpikeSourcePoissonOnChip")
        if not float(seed).is_integer() or not 0 <= seed < 2 ** 32:
            raise ValueError(f"SpikeSourcePoissonOnChip {population.label!r}: seed "
                             f"must be an integer in [0, 2^32), got {seed:g}")
        if population.size > MAX_BACKGROUND_SOURCE_SIZE:
            raise ValueError(
                f"SpikeSourcePoissonOnChip {population.label!r}: size "
                f"{population.size} is out of range 1..{MAX_BACKGROUND_SOURCE_SIZE} "
                "(8-bit label randomisation of the background source)")
        return rate, int(seed), background_source_settings(rate, population.size)

    @classmethod
    def to_proto(cls, population, message: experiment_pb2.Population, runtime_ms: float,
                 t_start: float = 0.0):  # pylint: disable=unused-argument
        rate, seed, _ = cls.settings(population)
        state = population._simulator.state  # pylint: disable=protected-access
        on_chip = [p for p in state.populations
                   if isinstance(p.celltype, SpikeSourcePoissonOnChip)]
        if len(on_chip) > NUM_BACKGROUND_SOURCE_SETS:
            raise ValueError(f"Cannot register more than "
                             f"{NUM_BACKGROUND_SOURCE_SETS} ID sets")
        permutation = list(getattr(state, "background_permutation", None)
                           or DEFAULT_BACKGROUND_PERMUTATION)
        index = on_chip.index(population)
        if index >= len(permutation):
            raise ValueError(
                f"backgroundPermutation {permutation} has no entry for the "
                f"{index + 1}. SpikeSourcePoissonOnChip population")
        # the PADI bus (permutation[index]) only matters for routing on the
        # real chip; the emulated source is the same on every bus
        message.cell_type = experiment_pb2.CELL_TYPE_SPIKE_SOURCE_POISSON_ON_CHIP
        message.spike_source_poisson_on_chip.rate_hz = rate
        message.spike_source_poisson_on_chip.seed = seed


# -- calibrated neurons --------------------------------------------------------


def _calib_ranges():
    # target -> (min, max) as documented by pynn_brainscales / calix;
    # potentials in CADC LSB, times in us hardware
    return {
        "v_rest": (50, 160), "v_reset": (50, 160), "v_thresh": (50, 220),
        "tau_m": (0.5, 60), "tau_syn_E": (0.3, 30), "tau_syn_I": (0.3, 30),
        "cm": (0, 63), "tau_refrac": (0.04, 32),
        "i_synin_gm_E": (30, 800), "i_synin_gm_I": (30, 800),
        "synapse_dac_bias": (30, 1022),
    }


class CalibHXNeuronCuba(StandardCellType):
    """HX neuron with automated calibration and current-based synapses, as
    pynn_brainscales' ``CalibHXNeuronCuba``: the cell parameters are the
    calibration targets (potentials in CADC LSB, time constants in us of
    hardware time).

    At ``run()`` (or ``run(None, RunCommand.PREPARE)``) the server's
    calibration of the chip in use for these targets is fetched
    (``GetCalibration``: computed once per chip and targets, then served
    from the server's cache) and its per-circuit hardware parameters
    configure the neurons. ``calib_target`` / ``calib_hwparams`` /
    ``actual_hwparams`` are available afterwards.

    Parameter ranges: v_rest, v_reset [50, 160]; v_thresh [50, 220];
    tau_m [0.5, 60] us; tau_syn_E/I [0.3, 30] us; cm [0, 63];
    tau_refrac [0.04, 32] us; i_synin_gm_E/I [30, 800];
    synapse_dac_bias [30, 1022]. i_synin_gm_E/I and synapse_dac_bias are
    technical parameters that must be the same for all neurons.
    """

    default_parameters = {
        "v_rest": 80.0, "v_reset": 70.0, "v_thresh": 125.0,
        "tau_m": 10.0, "tau_syn_E": 10.0, "tau_syn_I": 10.0,
        "cm": 63.0, "tau_refrac": 2.0,
        "i_synin_gm_E": 500.0, "i_synin_gm_I": 500.0,
        "synapse_dac_bias": 600.0,
    }
    ranges = _calib_ranges()
    translations = build_translations(*((name, name) for name in default_parameters))
    units = {name: "dimensionless" for name in default_parameters}
    units.update({"tau_m": "us", "tau_syn_E": "us", "tau_syn_I": "us",
                  "tau_refrac": "us", "v": "dimensionless",
                  "exc_synin": "dimensionless", "inh_synin": "dimensionless",
                  "adaptation": "dimensionless"})
    recordable = ["spikes", "v", "exc_synin", "inh_synin", "adaptation"]
    receptor_types = ["excitatory", "inhibitory"]
    conductance_based = False
    injectable = False
    records_on_chip = True
    #: parameters that must be equal for all neurons (one value per chip)
    global_parameters = ("i_synin_gm_E", "i_synin_gm_I", "synapse_dac_bias")
    #: configured from a calibration for the cell parameters (targets)
    calibrated_targets = True

    def __init__(self, plasticity_rule=None, **parameters):
        if plasticity_rule is not None:
            raise NotImplementedError("plasticity rules are not supported by hxemu")
        parameters = {k: v for k, v in parameters.items() if v is not None}
        for name, value in parameters.items():
            if name in self.ranges and _is_plain_value(value):
                self.validate_native(name, value)
        super().__init__(**parameters)
        self.explicit_parameters = frozenset(parameters)
        #: set at run / PREPARE (see the class documentation)
        self._calib_target = None
        self._calib_hwparams = None

    @classmethod
    def validate_native(cls, name: str, values):
        """Range-check a calibration target; returns the values."""
        array = np.asarray(values, dtype=np.float64)
        if name not in cls.ranges:
            if not np.all(np.isfinite(array)):
                raise ValueError(f"{cls.__name__} parameter '{name}' must be "
                                 f"finite, got {values!r}")
            return values
        low, high = cls.ranges[name]
        bad = ~np.isfinite(array) | (array < low) | (array > high)
        if np.any(bad):
            raise ValueError(
                f"{cls.__name__} parameter '{name}' = "
                f"{_parameters._fmt(np.ravel(array[bad] if array.ndim else array)[0])} "
                f"is out of range: must be in [{low:g}, {high:g}]")
        if name in cls.global_parameters and array.ndim and \
                not np.all(array == np.ravel(array)[0]):
            raise ValueError(f"{cls.__name__} parameter '{name}' must be the "
                             "same for all neurons")
        return values

    def _archive(self, what: str):
        value = getattr(self, what)
        if value is None:
            raise AttributeError(f"{what.lstrip('_')} only available after pynn.run() "
                                 "call. You can also use pynn.run(None, "
                                 "pynn.RunCommand.PREPARE).")
        return value

    @property
    def calib_target(self):
        """Per neuron: the targets of the last calibration (dict name -> value)."""
        return self._archive("_calib_target")

    @property
    def calib_hwparams(self):
        """Per neuron: the hardware parameters the calibration found
        (dict HXNeuron parameter name -> value)."""
        return self._archive("_calib_hwparams")

    @property
    def actual_hwparams(self):
        """Per neuron: the hardware parameters used for the run."""
        return tuple(self._archive("_calib_hwparams"))

    @staticmethod
    def to_proto(population, message: experiment_pb2.Population, runtime_ms: float,
                 t_start: float = 0.0):  # pylint: disable=unused-argument
        # the placement and the calibrated parameters are filled in by
        # hxemu.pynn.experiment (they need the whole network)
        message.cell_type = experiment_pb2.CELL_TYPE_HX_NEURON


class CalibHXNeuronCoba(CalibHXNeuronCuba):
    """As :class:`CalibHXNeuronCuba` with conductance-based synapses
    (``e_rev_E``, ``e_rev_I``: reversal potentials [CADC LSB]; targets beyond
    the reachable range are calibrated at a lower, linearly interpolated
    value, as calix does). All weights must be >= 0."""

    default_parameters = {
        "v_rest": 110.0, "v_reset": 100.0, "v_thresh": 160.0,
        "tau_m": 10.0, "tau_syn_E": 10.0, "tau_syn_I": 10.0,
        "cm": 63.0, "tau_refrac": 2.0,
        "e_rev_E": 300.0, "e_rev_I": 30.0,
        "i_synin_gm_E": 180.0, "i_synin_gm_I": 250.0,
        "synapse_dac_bias": 400.0,
    }
    translations = build_translations(*((name, name) for name in default_parameters))
    units = dict(CalibHXNeuronCuba.units, e_rev_E="dimensionless",
                 e_rev_I="dimensionless")
    conductance_based = True


def check_calib_target(target):
    """setup(injected_calib_target=...): None or a mapping of
    CalibHXNeuronCuba/Coba parameter names to scalar targets."""
    if target is None:
        return None
    if not isinstance(target, dict):
        raise TypeError("injected_calib_target: hxemu takes a dict of "
                        "CalibHXNeuronCuba/Coba parameter names (v_rest, tau_m, "
                        f"...) to values, got {type(target).__name__}")
    known = set(CalibHXNeuronCoba.default_parameters)
    unknown = sorted(set(target) - known)
    if unknown:
        raise KeyError(f"injected_calib_target: unknown targets {unknown}; "
                       f"known: {sorted(known)}")
    for name, value in target.items():
        CalibHXNeuronCoba.validate_native(name, value)
    return dict(target)

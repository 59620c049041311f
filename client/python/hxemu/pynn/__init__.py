"""PyNN backend for hxemu, compatible with ``pynn_brainscales.brainscales2``.

Replace ``import pynn_brainscales.brainscales2 as pynn`` by
``import hxemu.pynn as pynn`` (or opt in to :mod:`hxemu.compat`). The server
is the one in ``HXEMU_ADDRESS`` (``host:port``; quiggeldy's
``QUIGGELDY_ENABLED/IP/PORT`` are aliases), or ``pynn.setup(connection=
"host:port")``, else a private embedded ``hxemu-server``.
"""

from __future__ import annotations

import dataclasses as _dataclasses
import warnings as _warnings
from enum import Enum as _Enum, auto as _auto
from typing import Optional as _Optional

with _warnings.catch_warnings():
    # pyNN warns about a missing mpi4py on some imports; hxemu never uses MPI
    _warnings.filterwarnings("ignore", message="mpi4py not available")
    from pyNN import common, space  # noqa: F401
    from pyNN.common.control import DEFAULT_MAX_DELAY, DEFAULT_MIN_DELAY
    from pyNN.connectors import (  # noqa: F401
        AllToAllConnector, ArrayConnector, CloneConnector, CSAConnector,
        DisplacementDependentProbabilityConnector,
        DistanceDependentProbabilityConnector, FixedNumberPostConnector,
        FixedNumberPreConnector, FixedProbabilityConnector,
        FixedTotalNumberConnector, FromFileConnector, FromListConnector,
        IndexBasedProbabilityConnector, OneToOneConnector, SmallWorldConnector)
    from pyNN.recording import get_io

from hxemu.pynn import helper, logger, simulator
from hxemu.pynn.plasticity_rules import PlasticityRule, Timer  # noqa: F401
from hxemu.pynn.statistics import BackendStatistics as _BackendStatistics
from hxemu.pynn.simulator import SnippetWarning  # noqa: F401
from hxemu.pynn.standardmodels import cells, synapses
from hxemu.pynn.standardmodels.cells import (  # noqa: F401
    CalibHXNeuronCoba, CalibHXNeuronCuba, HXNeuron, SpikeSourceArray,
    SpikeSourcePoisson, SpikeSourcePoissonOnChip)
from hxemu.pynn.standardmodels.synapses import StaticSynapse  # noqa: F401
from hxemu.pynn.populations import Assembly, Population, PopulationView
from hxemu.pynn.projections import Projection

__all__ = ["list_standard_models", "setup", "end", "run", "run_until",
           "run_for", "reset", "initialize", "get_current_time", "create",
           "connect", "set", "record", "logger", "preprocess"]

def list_standard_models():
    """The StandardCellType classes available in this backend (as
    pynn_brainscales: the on-chip neuron types)."""
    return [cells.HXNeuron, cells.CalibHXNeuronCuba, cells.CalibHXNeuronCoba]


def _check_permutation(permutation):
    permutation = [int(p) for p in permutation]
    if len(permutation) > 512:
        raise ValueError("Too many elements in HW LUT.")
    if len(permutation) > len(frozenset(permutation)):  # `set` is pynn.set here
        raise ValueError("Non unique entries in HW LUT.")
    for entry in permutation:
        if not 0 <= entry < 512:
            raise ValueError(f"NeuronPermutation list entry {entry} out of range. "
                             "Needs to be in range [0, 511]")
    return permutation


def _check_background_permutation(permutation):
    permutation = [int(p) for p in permutation]
    if len(permutation) > len(frozenset(permutation)):
        raise ValueError("Non unique entries in backgroundPermutation.")
    for entry in permutation:
        if not 0 <= entry < cells.NUM_BACKGROUND_SOURCE_SETS:
            raise ValueError(
                f"backgroundPermutation list entry {entry} out of range. Needs "
                f"to be in range [0, {cells.NUM_BACKGROUND_SOURCE_SETS - 1}]")
    return permutation


@_dataclasses.dataclass
class InjectedConfiguration:
    """pynn_brainscales' user-injected chip configuration (lola containers
    written around the real-time section). hxemu emulates the chip at network
    level and has no container-level access: only an empty instance is
    accepted by :func:`setup`."""

    pre_non_realtime: dict = _dataclasses.field(default_factory=dict)
    pre_realtime: dict = _dataclasses.field(default_factory=dict)
    inside_realtime_begin: dict = _dataclasses.field(default_factory=dict)
    inside_realtime: dict = _dataclasses.field(default_factory=dict)
    inside_realtime_end: dict = _dataclasses.field(default_factory=dict)
    post_realtime: dict = _dataclasses.field(default_factory=dict)
    ppu_symbols: dict = _dataclasses.field(default_factory=dict)


@_dataclasses.dataclass
class InjectedReadout:
    """pynn_brainscales' user-injected container reads; as
    :class:`InjectedConfiguration`, only an empty instance is accepted."""

    pre_realtime: set = _dataclasses.field(default_factory=set)
    inside_realtime_begin: set = _dataclasses.field(default_factory=set)
    inside_realtime_end: set = _dataclasses.field(default_factory=set)
    post_realtime: set = _dataclasses.field(default_factory=set)
    ppu_symbols: set = _dataclasses.field(default_factory=set)


def _check_injection(name, value):
    if value is None:
        return
    fields = [getattr(value, f.name) for f in _dataclasses.fields(value)] \
        if _dataclasses.is_dataclass(value) else [value]
    if any(fields):
        raise NotImplementedError(
            f"pynn.setup({name}=...): hxemu emulates the chip at network level "
            "and cannot inject or read lola containers; only an empty "
            f"{type(value).__name__} is accepted")


def setup(timestep=simulator.State.dt, min_delay=DEFAULT_MIN_DELAY, **extra_params):
    """Start a new network; must be called first.

    The keywords of pynn_brainscales (anything else raises its
    ``KeyError("unhandled extra_params in call to pynn.setup(...):...")``):

    :param max_delay: stored only ("auto" -> 0).
    :param neuronPermutation: i-th on-chip neuron (over all populations, in
        creation order) -> neuron circuit (0..511); unique.
    :param backgroundPermutation: i-th SpikeSourcePoissonOnChip population ->
        background source set (PADI bus 0..3); default [3, 2, 1, 0].
    :param enable_neuron_bypass: neurons forward every input spike (no
        integration): the default parameters become threshold_enable=False,
        event_routing_enable_bypass_excitatory/inhibitory=True; replaces
        ``initial_config``.
    :param initial_config: a calibration (``hxemu.v1.Calibration``, from
        :func:`helper.chip_from_nightly` / :func:`helper.chip_from_file`):
        every HXNeuron without an explicit value of a parameter gets the
        calibrated value of its circuit (applied by the server); the run
        goes to the calibration's chip unless ``chip_id`` says otherwise.
    :param injected_config, injected_readout: only empty
        :class:`InjectedConfiguration` / :class:`InjectedReadout` (or None);
        hxemu has no container-level access.
    :param calibration_cache: accepted for compatibility; calibrations are
        cached by the server (per chip, targets and emulator version).
    :param injected_calib_target: defaults of the calibration targets of
        CalibHXNeuronCuba/Coba populations: a mapping of their parameter
        names (v_rest, tau_m, ...) to values; population parameters win.
    :param injected_calib_options: only None (hxemu's calibration has no
        options).
    :param connection: server address ``"host:port"`` or a
        :class:`hxemu.Client`; default ``HXEMU_ADDRESS`` (or quiggeldy's
        ``QUIGGELDY_ENABLED/IP/PORT``), else the embedded server.

    hxemu's own keywords:

    :param rng_seed: seed of the trial-to-trial noise; the k-th run after
        setup gets a seed derived from it (reproducible). Default random.
    :param chip_id: run on this emulated chip (its fixed-pattern mismatch).
        Default: the calibration's chip, else any chip.
    :param progress: progress bar of runs (tqdm, on stderr, for runs longer
        than 0.5 s): True, False, or None (default) = when
        ``HXEMU_PROGRESS=1`` or stderr is a terminal.
    """
    previous = simulator.state
    if previous is not None:
        previous.close()
    simulator.state = simulator.State()
    state = simulator.state

    max_delay = extra_params.pop("max_delay", DEFAULT_MAX_DELAY)
    common.setup(timestep, min_delay, **extra_params)
    state.dt = timestep
    state.min_delay = 0 if min_delay == "auto" else min_delay
    state.max_delay = 0 if max_delay == "auto" else max_delay
    permutation = extra_params.pop("neuronPermutation", None)
    state.neuron_permutation = None if permutation is None else \
        _check_permutation(permutation)
    background = extra_params.pop("backgroundPermutation", None)
    state.background_permutation = None if background is None else \
        _check_background_permutation(background)
    _check_injection("injected_config", extra_params.pop("injected_config", None))
    _check_injection("injected_readout", extra_params.pop("injected_readout", None))
    state.connection = extra_params.pop("connection", None)
    initial_config = extra_params.pop("initial_config", None)
    state.neuron_bypass = bool(extra_params.pop("enable_neuron_bypass", False))
    if state.neuron_bypass:
        if initial_config is not None:
            state.log.INFO("setup(): Supplied initial_config overwritten by "
                           "enable_neuron_bypass")
        initial_config = None
    state.initial_config = None if initial_config is None else \
        helper.as_calibration(initial_config)
    state.calibration_cache = extra_params.pop("calibration_cache", None)
    state.injected_calib_target = cells.check_calib_target(
        extra_params.pop("injected_calib_target", None))
    _check_injection("injected_calib_options",
                     extra_params.pop("injected_calib_options", None))
    state.set_rng_seed(extra_params.pop("rng_seed", None))
    chip_id = extra_params.pop("chip_id", None)
    state.chip_id = None if chip_id is None else int(chip_id)
    progress = extra_params.pop("progress", None)
    state.progress = None if progress is None else bool(progress)

    if extra_params:
        raise KeyError("unhandled extra_params in call to pynn.setup(...):"
                       f"{extra_params}")
    return 0  # MPI rank, as PyNN's setup()


def end():
    """Write files requested by record(to_file=...) and release the connection."""
    state = simulator.state
    for (population, variables, filename) in state.write_on_end:
        population.write_data(get_io(filename), variables)
    state.write_on_end = []
    state.close()
    simulator.state = simulator.State()


class RunCommand(_Enum):
    """Command specifying the type of run to be performed in pynn.run()

    PREPARE: only the preparatory steps (hxemu: build and check the
    experiment; there is no calibration). APPEND: snapshot the current
    network for a runtime (a "snippet"). EXECUTE: run all appended snippets,
    after appending a last one if a runtime is given.
    """
    PREPARE = _auto()
    APPEND = _auto()
    EXECUTE = _auto()


# common.build_run's run adds the runtime to the current time; run(None, ...)
# needs its own function
_, run_until = common.build_run(simulator)


def run(runtime: _Optional[float], command: RunCommand = RunCommand.EXECUTE):
    """Run the network for ``runtime`` ms of hardware time, or, by
    ``command`` (pynn_brainscales semantics):

    * ``RunCommand.PREPARE``: build and check the experiment, run nothing;
    * ``RunCommand.APPEND``: snapshot the network for ``runtime`` ms; the
      next snippet starts where it ends;
    * ``RunCommand.EXECUTE`` (default): append ``runtime`` if given, then run
      all appended snippets. Their data form one neo segment (times from the
      start of the first snippet). Snippets with the same configuration run
      as one continuous experiment; a configuration change between snippets
      splits the run into consecutive experiments on the same chip, each
      starting from rest (a :class:`SnippetWarning` says so).

    Returns the current time [ms].
    """
    state = simulator.state
    if command == RunCommand.PREPARE:
        state.prepare()
    elif command == RunCommand.APPEND:
        if runtime is None:
            raise ValueError("Appending a configuration that is executed for "
                             "no time is forbidden.")
        state.add(runtime)
    elif command == RunCommand.EXECUTE:
        if runtime is not None:
            state.add(runtime)
        elif not state.snippets:
            raise ValueError(
                "No experiment scheduled for execution yet.\n"
                "To schedule an execution of the currently defined network "
                "configuration use `command=pyNN.RunCommand.APPEND`.\n"
                "To only perform map and route operations on the current "
                "network configuration use `command=pyNN.RunCommand.PREPARE`")
        state.execute()
    else:
        raise ValueError("Passed command is invalid.")
    return state.t


run_for = run


def preprocess():
    """Same as ``run(None, RunCommand.PREPARE)`` (kept for compatibility)."""
    _warnings.warn("Please use pyNN.run(None, pyNN.RunCommand.PREPARE)",
                   DeprecationWarning, stacklevel=2)
    simulator.state.prepare()


reset = common.build_reset(simulator)

initialize = common.initialize

get_current_time, get_time_step, get_min_delay, get_max_delay, \
    num_processes, rank = common.build_state_queries(simulator)

create = common.build_create(Population)

connect = common.build_connect(Projection, FixedProbabilityConnector,
                               synapses.StaticSynapse)

set = common.set  # pylint: disable=redefined-builtin

record = common.build_record(simulator)


def _require_run(what: str):
    if not simulator.state.running:
        raise RuntimeError(f"{what} are only available after emulation on "
                           "hardware. Call pynn.run(...).")


def get_pre_realtime_read() -> dict:
    """Results of the reads of ``InjectedReadout.pre_realtime`` (coordinate
    -> container). hxemu accepts only an empty InjectedReadout (it has no
    container access), so this is always an empty dict."""
    return {}


def get_post_realtime_read() -> dict:
    """Results of the reads of ``InjectedReadout.post_realtime``; always
    empty on hxemu (see :func:`get_pre_realtime_read`)."""
    return {}


def get_post_realtime_read_ppu_symbols() -> dict:
    """Results of the PPU symbol reads of ``InjectedReadout.ppu_symbols``
    after a run; always empty on hxemu (no PPU, and only an empty
    InjectedReadout is accepted)."""
    _require_run("Read PPU symbols")
    return {}


def get_backend_statistics() -> _BackendStatistics:
    """Placement statistics of the last mapping (``run()`` or ``run(None,
    RunCommand.PREPARE)``): populations, projections, placed neurons,
    hardware synapses, usage fractions and the client's construction time,
    with the ``get_*`` methods of grenade's NetworkGraphStatistics. Figures
    that need the server's synapse-row routing (synapse drivers, routing
    time) raise NotImplementedError."""
    state = simulator.state
    if state.last_experiment is None:
        raise RuntimeError(
            "Backend statistics are only available after first mapping and "
            "routing execution, which happens in pynn.run().")
    return _BackendStatistics.of(state.last_experiment, state.build_duration)

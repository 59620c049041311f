"""PyNN backend for hxemu, compatible with ``pynn_brainscales.brainscales2``.

Replace ``import pynn_brainscales.brainscales2 as pynn`` by
``import hxemu.pynn as pynn``. The server is the one in ``HXEMU_ADDRESS``
(``host:port``), or ``pynn.setup(connection="host:port")``, else a private
embedded ``hxemu-server``.
"""

from __future__ import annotations

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

from hxemu.pynn import logger, simulator
from hxemu.pynn.simulator import SnippetWarning  # noqa: F401
from hxemu.pynn.standardmodels import cells, synapses
from hxemu.pynn.standardmodels.cells import (  # noqa: F401
    HXNeuron, SpikeSourceArray, SpikeSourcePoisson)
from hxemu.pynn.standardmodels.synapses import StaticSynapse  # noqa: F401
from hxemu.pynn.populations import Assembly, Population, PopulationView
from hxemu.pynn.projections import Projection

__all__ = ["list_standard_models", "setup", "end", "run", "run_until",
           "run_for", "reset", "initialize", "get_current_time", "create",
           "connect", "set", "record", "logger", "preprocess"]

#: setup() keywords that pynn_brainscales knows but hxemu does not support yet
_UNSUPPORTED_EXTRA_PARAMS = (
    "backgroundPermutation", "enable_neuron_bypass", "initial_config",
    "injected_config", "injected_readout", "calibration_cache",
    "injected_calib_target", "injected_calib_options")


def list_standard_models():
    """The StandardCellType classes available in this backend."""
    return [cells.HXNeuron]  # no CalibHXNeuronCuba/Coba yet (need calibration)


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


def setup(timestep=simulator.State.dt, min_delay=DEFAULT_MIN_DELAY, **extra_params):
    """Start a new network; must be called first.

    Keywords as in pynn_brainscales, plus the hxemu ones:

    :param connection: server address ``"host:port"`` or a
        :class:`hxemu.Client`; default ``HXEMU_ADDRESS``, else the embedded
        server.
    :param neuronPermutation: i-th HXNeuron (over all populations, in creation
        order) -> neuron circuit (0..511).
    :param max_delay: stored only.
    :param rng_seed: hxemu: seed of the trial-to-trial noise; the k-th run
        after setup gets a seed derived from it (reproducible). Default random.
    :param chip_id: hxemu: run on this emulated chip (its fixed-pattern
        mismatch). Default: any chip.
    :param progress: hxemu: progress bar of runs (tqdm, on stderr, for runs
        longer than 0.5 s): True, False, or None (default) = when
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
    state.connection = extra_params.pop("connection", None)
    permutation = extra_params.pop("neuronPermutation", None)
    state.neuron_permutation = None if permutation is None else \
        _check_permutation(permutation)
    state.set_rng_seed(extra_params.pop("rng_seed", None))
    chip_id = extra_params.pop("chip_id", None)
    state.chip_id = None if chip_id is None else int(chip_id)
    progress = extra_params.pop("progress", None)
    state.progress = None if progress is None else bool(progress)

    unsupported = [k for k in extra_params if k in _UNSUPPORTED_EXTRA_PARAMS]
    if unsupported:
        raise NotImplementedError(
            f"pynn.setup(): {', '.join(unsupported)} not supported by hxemu yet")
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

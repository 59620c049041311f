"""Backend state of the hxemu PyNN backend.

Where pynn_brainscales keeps hardware handles, this module keeps a
:class:`hxemu.Client`: every :func:`run` turns the current network into one
``hxemu.v1.Experiment``, runs it on the server and keeps the result for the
recorders until the next :func:`reset`.
"""

from __future__ import annotations

import dataclasses
import datetime
import time
import uuid
import warnings
from typing import Dict, List, Optional, Tuple

import numpy as np
from pyNN import common

from hxemu._proto import experiment_pb2
from hxemu.client import Client, raise_for_job
from hxemu.progress import wait_with_progress
from hxemu.pynn import logger
from hxemu.pynn.experiment import (RunData, build_experiment, cadc_times,
                                   host_source_spikes)

name = "hxemu"  # annotates recorded data (Block.annotations["simulator"])


class ID(int, common.IDMixin):
    __doc__ = common.IDMixin.__doc__

    def __init__(self, n):
        """Create an ID object with numerical value `n`."""
        int.__init__(n)
        common.IDMixin.__init__(self)


class SnippetWarning(UserWarning):
    """Snippets with different configurations ran as separate experiments."""


@dataclasses.dataclass
class Snippet:
    """One ``run(..., RunCommand.APPEND)``: the network as it was, for
    [t_start, t_start + runtime_ms) of the current segment."""

    t_start: float
    runtime_ms: float
    #: the experiment of this snippet alone (spike times relative to t_start)
    experiment: experiment_pb2.Experiment
    #: (population, neuron) -> absolute spike times of the spike arrays
    source_spikes: Dict[Tuple[int, int], np.ndarray]
    #: configuration without times: equal keys = one continuous experiment
    key: bytes

    @classmethod
    def of(cls, state, runtime_ms: float, t_start: float) -> "Snippet":
        experiment = build_experiment(state, runtime_ms, 0, t_start=t_start)
        config = experiment_pb2.Experiment()
        config.CopyFrom(experiment)
        config.runtime_ms = 0
        if config.cadc.times_ms:
            # read times follow the runtime; whether the CADC reads is config
            del config.cadc.times_ms[:]
            config.cadc.times_ms.append(0.0)
        for index, population in enumerate(config.populations):
            population.ClearField("spike_source_array")
            if population.cell_type == experiment_pb2.CELL_TYPE_SPIKE_SOURCE_POISSON:
                # absolute firing window, independent of the snippet
                root = state.populations[index]
                poisson = population.spike_source_poisson
                poisson.rate_hz, poisson.start_ms, poisson.duration_ms = (
                    root.celltype.window(root, np.inf, 0.0))
        return cls(t_start=t_start, runtime_ms=runtime_ms, experiment=experiment,
                   source_spikes=host_source_spikes(state, runtime_ms, t_start),
                   key=config.SerializeToString(deterministic=True))


def merge_snippets(snippets: List[Snippet]) -> experiment_pb2.Experiment:
    """One experiment over all ``snippets`` (consecutive, with equal keys):
    the configuration of the first, their total runtime, the spike arrays'
    spikes of every snippet, Poisson sources over the joined windows; times
    relative to the first snippet's t_start."""
    first = snippets[0]
    offset = first.t_start
    total = sum(s.runtime_ms for s in snippets)
    merged = experiment_pb2.Experiment()
    merged.CopyFrom(first.experiment)
    merged.runtime_ms = total
    if first.experiment.cadc.times_ms:
        del merged.cadc.times_ms[:]
        merged.cadc.times_ms.extend(cadc_times(total).tolist())
    for index, population in enumerate(merged.populations):
        if population.cell_type == experiment_pb2.CELL_TYPE_SPIKE_SOURCE_ARRAY:
            population.ClearField("spike_source_array")
            for neuron in range(population.size):
                times = np.concatenate(
                    [s.source_spikes.get((index, neuron), np.zeros(0)) for s in snippets])
                times = times - offset
                population.spike_source_array.spike_times.add().times_ms.extend(
                    times.tolist())
        elif population.cell_type == experiment_pb2.CELL_TYPE_SPIKE_SOURCE_POISSON:
            # the windows of consecutive snippets join up to the whole window
            windows = [(s.t_start - offset + s.experiment.populations[index]
                        .spike_source_poisson.start_ms,
                        s.experiment.populations[index].spike_source_poisson)
                       for s in snippets]
            active = [(begin, w) for begin, w in windows if w.rate_hz > 0]
            poisson = population.spike_source_poisson
            if active:
                begin = active[0][0]
                end = active[-1][0] + active[-1][1].duration_ms
                poisson.rate_hz = active[0][1].rate_hz
                poisson.start_ms = begin
                poisson.duration_ms = end - begin
            else:
                poisson.rate_hz = poisson.start_ms = poisson.duration_ms = 0.0
    return merged


class State(common.control.BaseState):
    """The simulator state: network, connection and the data of the last run."""

    #: average time between two MADC samples [ms] (pynn_brainscales' dt)
    dt = 3.4e-05

    def __init__(self):
        super().__init__()
        self.mpi_rank = 0
        self.num_processes = 1
        # analog data are IrregularlySampledSignals, as in pynn_brainscales
        self.record_sample_times = True
        self.min_delay = 0
        self.max_delay = 0
        self.connection = None          # hxemu.Client, str address or None
        self._client = None
        self._owns_client = False
        self.rng_seed: Optional[int] = None
        self._seeds: Optional[np.random.SeedSequence] = None
        self.chip_id: Optional[int] = None
        self.neuron_permutation: Optional[List[int]] = None
        #: progress bar: None = auto (HXEMU_PROGRESS, stderr a terminal)
        self.progress: Optional[bool] = None
        #: setup(initial_config=...): a hxemu.v1.Calibration, or None
        self.initial_config = None
        #: setup(enable_neuron_bypass=True)
        self.neuron_bypass = False
        #: setup(backgroundPermutation=...), None = the default
        self.background_permutation: Optional[List[int]] = None
        self.calibration_cache = None
        self.injected_calib_target: Optional[dict] = None
        #: (chip id, serialized targets) -> hxemu.v1.Calibration
        self.calibrations = {}
        self._circuit_index = {}  # id(calibration) -> circuit -> entry
        self.log = logger.get("hxemu.pynn")
        self.clear()

    # -- network bookkeeping ------------------------------------------------

    def clear(self):
        self.recorders = set()
        self.populations = []
        self.projections = []
        self.write_on_end = []
        self.id_counter = 0
        self.segment_counter = -1
        self.last_job = None
        #: the experiment of the last run() / run(None, PREPARE) (for the
        #: placement statistics)
        self.last_experiment = None
        #: client time spent building last_experiment's snippets
        self.build_duration = datetime.timedelta(0)
        self.reset()

    def reset(self):
        """Reset the state of the current network to time t = 0."""
        self.running = False
        self.t = 0
        self.t_start = 0
        self.segment_counter += 1
        self.data = None  # RunData of the current segment
        self.snippets: List[Snippet] = []  # appended, not yet executed
        self._pending_build_s = 0.0  # client time building self.snippets [s]

    # -- connection -----------------------------------------------------------

    def client(self):
        """The hxemu.Client used for runs (created on first use)."""
        if self._client is None:
            if isinstance(self.connection, Client):
                self._client, self._owns_client = self.connection, False
            else:
                self._client = Client(self.connection)
                self._owns_client = True
        return self._client

    def has_client(self) -> bool:
        return self._client is not None

    def close(self):
        if self._client is not None and self._owns_client:
            self._client.close()
        self._client = None

    def next_seed(self) -> int:
        """Seed of the next experiment (trial-to-trial noise, Poisson trains):
        derived from setup(rng_seed=...) if given (reproducible sequence),
        else drawn from numpy's global RNG, so that ``np.random.seed(n)``
        makes runs reproducible as it does for pynn_brainscales' host-side
        Poisson sources (numpy seeds itself from OS entropy otherwise)."""
        if self._seeds is None:
            return int(np.random.randint(0, 2 ** 64, dtype=np.uint64))
        return int(self._seeds.spawn(1)[0].generate_state(1, np.uint64)[0])

    def set_rng_seed(self, seed: Optional[int]):
        self.rng_seed = seed
        self._seeds = None if seed is None else np.random.SeedSequence(seed)

    # -- calibrations (CalibHXNeuronCuba/Coba) ---------------------------------

    def calibration_chip(self) -> Optional[int]:
        """The chip calibrations are fetched for: setup(chip_id=...), else
        the initial_config's chip, else the chip of the calibrations fetched
        so far, else None (the server picks)."""
        if self.chip_id is not None:
            return self.chip_id
        if self.initial_config is not None:
            return self.initial_config.chip_id
        return next((chip for chip, _ in self.calibrations if chip is not None), None)

    def calibration(self, targets):
        """The server's calibration for ``targets`` (hxemu.v1.CalibrationTargets)
        on :meth:`calibration_chip`; fetched once per setup()."""
        chip = self.calibration_chip()
        key = (chip, targets.SerializeToString(deterministic=True))
        calibration = self.calibrations.get(key)
        if calibration is None:
            calibration = self.client().calibration(chip, targets)
            if calibration.warning:
                warnings.warn(f"hxemu calibration of chip {calibration.chip_id}: "
                              f"{calibration.warning}", RuntimeWarning, stacklevel=2)
            self.calibrations[(calibration.chip_id, key[1])] = calibration
            self.calibrations[key] = calibration
        return calibration

    def circuit_calibration(self, calibration, circuit: int):
        """The CircuitCalibration of ``circuit`` in ``calibration``."""
        index = self._circuit_index.get(id(calibration))
        if index is None:
            index = {c.circuit: c for c in calibration.circuits}
            self._circuit_index[id(calibration)] = index
        entry = index.get(circuit)
        if entry is None:
            raise RuntimeError(f"the calibration of chip {calibration.chip_id} has no "
                               f"entry for neuron circuit {circuit}")
        return entry

    # -- running --------------------------------------------------------------

    def _check_not_run(self):
        if self.running:
            raise RuntimeError(
                "Call pynn.reset() before calling pynn.run() again. Continuing "
                "a run without reset is not supported: every run is one "
                "experiment on the emulated chip.")

    def prepare(self):
        """RunCommand.PREPARE: build the experiment of the current network
        (all client-side checks: placement, MADC limits, weights) without
        running it. hxemu needs no calibration, so nothing else happens."""
        begin = time.perf_counter()
        experiment = build_experiment(self, np.inf, 0, t_start=self.t)
        experiment.runtime_ms = 0  # not known yet; spike sources: all times
        self.last_experiment = experiment
        self.build_duration = datetime.timedelta(seconds=time.perf_counter() - begin)

    def add(self, runtime):
        """RunCommand.APPEND: snapshot the network for ``runtime`` ms."""
        self._check_not_run()
        runtime = float(runtime)
        if not runtime > 0:
            raise ValueError(f"runtime must be > 0 ms, got {runtime:g}")
        begin = time.perf_counter()
        self.snippets.append(Snippet.of(self, runtime, self.t))
        self._pending_build_s += time.perf_counter() - begin
        self.t += runtime

    def run(self, simtime):
        """Append a last snippet of ``simtime`` ms and execute."""
        self.add(simtime)
        self.execute()

    def execute(self):
        """RunCommand.EXECUTE: run the appended snippets.

        Snippets with the same configuration form one continuous experiment
        (exact). Snippets whose configuration differs cannot be one
        experiment on the server (its Experiment has one configuration), so
        they run as consecutive experiments on the same chip, each starting
        from rest; their data are concatenated with t_start offsets and a
        SnippetWarning says so.
        """
        self._check_not_run()
        snippets = self.snippets
        if not snippets:
            raise ValueError("No experiment scheduled for execution yet.")
        groups = [[snippets[0]]]
        for snippet in snippets[1:]:
            if snippet.key == groups[-1][-1].key:
                groups[-1].append(snippet)
            else:
                groups.append([snippet])
        if len(groups) > 1:
            warnings.warn(
                f"hxemu: the {len(snippets)} appended snippets have "
                f"{len(groups)} different configurations; they run as "
                f"{len(groups)} consecutive experiments on the same chip. The "
                "network state (membranes, synaptic currents, refractory "
                "counters) is not carried across a configuration change: each "
                "part starts from rest.", SnippetWarning, stacklevel=3)
        parts = []
        chip_id = self.chip_id
        for group in groups:
            experiment = merge_snippets(group)
            experiment.seed = self.next_seed()
            if chip_id is not None:
                experiment.chip_id = chip_id
            runtime = experiment.runtime_ms
            result = self._run_experiment(experiment)
            chip_id = result.chip_id
            source_spikes = {}
            for snippet in group:
                source_spikes.update({k: np.concatenate([source_spikes[k], v])
                                      if k in source_spikes else v
                                      for k, v in snippet.source_spikes.items()})
            data = RunData.from_result(result, None, runtime, experiment=experiment)
            t_start = group[0].t_start
            # source spikes are absolute already; shift only the server's data
            shifted = data.shifted(t_start)
            shifted.spikes.update(source_spikes)
            parts.append(shifted)
        self.data = parts[0] if len(parts) == 1 else RunData.concatenate(parts)
        self.snippets = []
        self.build_duration = datetime.timedelta(seconds=self._pending_build_s)
        self._pending_build_s = 0.0
        self.running = True

    def _run_experiment(self, experiment):
        self.last_experiment = experiment
        self.last_job = None
        client = self.client()
        request_id = str(uuid.uuid4())
        try:
            job = client.submit(experiment, request_id=request_id)
        except KeyboardInterrupt:
            # The interrupt may come after the server took the job but before
            # its reply: the same request_id finds that job (or makes it, if
            # the first never arrived), and it is cancelled, so that no job
            # runs on unseen.
            try:
                self.last_job = client.submit(experiment, request_id=request_id)
                client.cancel(self.last_job.job_id)
            except Exception:  # noqa: BLE001 - the interrupt matters more
                pass
            raise
        self.last_job = job
        try:
            job = wait_with_progress(client, job, show=self.progress,
                                     description="hxemu run")
        except KeyboardInterrupt:
            # do not leave an abandoned job on the emulator
            try:
                client.cancel(job.job_id)
            except Exception:  # noqa: BLE001 - the interrupt matters more
                pass
            raise
        self.last_job = job
        raise_for_job(job)
        return client.result(job.job_id)

    def run_until(self, tstop):
        self.run(tstop - self.t)


state = State()

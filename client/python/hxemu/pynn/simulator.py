"""Backend state of the hxemu PyNN backend.

Where pynn_brainscales keeps hardware handles, this module keeps a
:class:`hxemu.Client`: every :func:`run` turns the current network into one
``hxemu.v1.Experiment``, runs it on the server and keeps the result for the
recorders until the next :func:`reset`.
"""

from __future__ import annotations

import secrets
from typing import List, Optional

import numpy as np
from pyNN import common

from hxemu.client import Client, raise_for_job
from hxemu.pynn.experiment import RunData, build_experiment

name = "hxemu"  # annotates recorded data (Block.annotations["simulator"])


class ID(int, common.IDMixin):
    __doc__ = common.IDMixin.__doc__

    def __init__(self, n):
        """Create an ID object with numerical value `n`."""
        int.__init__(n)
        common.IDMixin.__init__(self)


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
        self.last_experiment = None
        self.reset()

    def reset(self):
        """Reset the state of the current network to time t = 0."""
        self.running = False
        self.t = 0
        self.t_start = 0
        self.segment_counter += 1
        self.data = None  # RunData of the current segment

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

    def close(self):
        if self._client is not None and self._owns_client:
            self._client.close()
        self._client = None

    def next_seed(self) -> int:
        """Seed of the next experiment: derived from setup(rng_seed=...) if
        given (reproducible sequence), else random."""
        if self._seeds is None:
            return secrets.randbits(64)
        return int(self._seeds.spawn(1)[0].generate_state(1, np.uint64)[0])

    def set_rng_seed(self, seed: Optional[int]):
        self.rng_seed = seed
        self._seeds = None if seed is None else np.random.SeedSequence(seed)

    # -- running --------------------------------------------------------------

    def run(self, simtime):
        if self.running:
            raise RuntimeError(
                "Call pynn.reset() before calling pynn.run() again. Continuing "
                "a run without reset is not supported: every run is one "
                "experiment on the emulated chip.")
        simtime = float(simtime)
        if not simtime > 0:
            raise ValueError(f"runtime must be > 0 ms, got {simtime:g}")
        experiment = build_experiment(self, simtime, self.next_seed())
        self.last_experiment = experiment
        client = self.client()
        job = client.submit(experiment)
        self.last_job = job
        try:
            job = client.wait(job.job_id)
        except KeyboardInterrupt:
            # do not leave an abandoned job on the emulator
            try:
                client.cancel(job.job_id)
            except Exception:  # noqa: BLE001 - the interrupt matters more
                pass
            raise
        self.last_job = job
        raise_for_job(job)
        result = client.result(job.job_id)
        self.data = RunData.from_result(result, self, simtime)
        self.t += simtime
        self.running = True

    def run_until(self, tstop):
        self.run(tstop - self.t)


state = State()

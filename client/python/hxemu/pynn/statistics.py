"""Placement statistics of the hxemu PyNN backend.

pynn_brainscales' ``get_backend_statistics()`` (grenade's
``NetworkGraphStatistics``) and ``Projection.placed_connections`` (the
synapses of every connection) describe the mapped network. hxemu knows the
placement of the neurons (the rule the server uses: explicit circuits, else
the lowest free ones; see :func:`hxemu.pynn.experiment.placed_circuits`) and
the synapse count of every connection (ceil(|w| / 63) 6-bit synapses in the
column of the target circuit, docs/emulator-model.md section 7). Which synapse
*row* (and so which synapse driver) the server's router picks is not reported
by the server: those figures raise NotImplementedError instead of guessing.
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import List, NamedTuple


from hxemu._proto import experiment_pb2
from hxemu.pynn.experiment import NUM_NEURON_COLUMNS, placed_circuits

#: neuron circuits of the chip (AtomicNeuronOnDLS)
NUM_NEURON_CIRCUITS = 512
#: synapses of the chip: two arrays of 256 rows x 256 columns
NUM_SYNAPSES = 2 * 256 * NUM_NEURON_COLUMNS
#: largest weight of one synapse [hardware LSB]
MAX_SYNAPSE_WEIGHT = 63

_NOT_REPORTED = ("the hxemu server does not report its synapse-row routing, so "
                 "{what} is not known to the client")


class PlacedSynapse(NamedTuple):
    """One hardware synapse of a connection (pynn_brainscales: a
    SynapseOnDLS). ``row`` is not reported by hxemu's server."""

    #: synapse array (= hemisphere of the target circuit), 0 or 1
    hemisphere: int
    #: column in the array = target circuit mod 256
    column: int
    #: target neuron circuit (AtomicNeuronOnDLS enum)
    circuit: int
    #: weight of this synapse [hardware LSB], 1..63
    weight: int


def synapse_weights(weight: int) -> List[int]:
    """The 6-bit synapses a connection of weight ``weight`` takes, as the
    server splits it: 63, 63, ..., rest (123 -> [63, 60]; 0 -> [])."""
    magnitude = abs(int(weight))
    full, rest = divmod(magnitude, MAX_SYNAPSE_WEIGHT)
    return [MAX_SYNAPSE_WEIGHT] * full + ([rest] if rest else [])


def placed_connections(experiment: experiment_pb2.Experiment,
                       index: int) -> List[List[PlacedSynapse]]:
    """Per connection of ``experiment.projections[index]`` (in the
    projection's order): its synapses."""
    projection = experiment.projections[index]
    circuits = placed_circuits(experiment)[projection.post_population]
    result = []
    for post, weight in zip(projection.post_indices, projection.weights):
        circuit = circuits[post]
        result.append([PlacedSynapse(circuit // NUM_NEURON_COLUMNS,
                                     circuit % NUM_NEURON_COLUMNS, circuit, part)
                       for part in synapse_weights(weight)])
    return result


@dataclasses.dataclass(frozen=True)
class BackendStatistics:
    """pynn_brainscales' ``NetworkGraphStatistics`` of the last mapped
    experiment (``run()`` or ``run(None, RunCommand.PREPARE)``), with the same
    ``get_*`` methods. Counts cover the on-chip part, as grenade's: HX neuron
    populations, projections onto them, placed circuits, hardware synapses."""

    num_populations: int
    num_projections: int
    num_neurons: int
    num_synapses: int
    #: time spent building the hxemu.v1.Experiment on the client
    abstract_network_construction_duration: datetime.timedelta

    @classmethod
    def of(cls, experiment: experiment_pb2.Experiment,
           construction_duration: datetime.timedelta) -> "BackendStatistics":
        circuits = placed_circuits(experiment)
        synapses = sum(len(synapse_weights(w)) for projection in experiment.projections
                       for w in projection.weights)
        return cls(num_populations=len(circuits),
                   num_projections=len(experiment.projections),
                   num_neurons=sum(len(c) for c in circuits.values()),
                   num_synapses=int(synapses),
                   abstract_network_construction_duration=construction_duration)

    def get_num_populations(self) -> int:
        return self.num_populations

    def get_num_projections(self) -> int:
        return self.num_projections

    def get_num_neurons(self) -> int:
        """Placed neuron circuits."""
        return self.num_neurons

    def get_num_synapses(self) -> int:
        """Hardware synapses (a weight > 63 takes several)."""
        return self.num_synapses

    def get_neuron_usage(self) -> float:
        """Fraction of the chip's 512 neuron circuits in use."""
        return self.num_neurons / NUM_NEURON_CIRCUITS

    def get_synapse_usage(self) -> float:
        """Fraction of the chip's 131072 synapses in use."""
        return self.num_synapses / NUM_SYNAPSES

    def get_num_synapse_drivers(self) -> int:
        raise NotImplementedError(_NOT_REPORTED.format(what="the synapse driver count"))

    def get_synapse_driver_usage(self) -> float:
        raise NotImplementedError(_NOT_REPORTED.format(what="the synapse driver usage"))

    def get_abstract_network_construction_duration(self) -> datetime.timedelta:
        return self.abstract_network_construction_duration

    def get_routing_duration(self) -> datetime.timedelta:
        raise NotImplementedError(
            "hxemu's server routes inside the job and does not report the time")

    def __str__(self) -> str:
        return ("BackendStatistics(\n"
                f"\tnum populations: {self.num_populations}\n"
                f"\tnum projections: {self.num_projections}\n"
                f"\tnum neurons: {self.num_neurons}\n"
                f"\tnum synapses: {self.num_synapses}\n"
                f"\tneuron usage: {self.get_neuron_usage():g}\n"
                f"\tsynapse usage: {self.get_synapse_usage():g}\n)")

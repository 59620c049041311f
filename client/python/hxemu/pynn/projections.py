"""Projection of the hxemu PyNN backend.

PyNN's connectors build the connection list; it is sent to the server as the
explicit list of a ``hxemu.v1.Projection`` (indices in the root populations,
integer weights in hardware LSB).
"""

from __future__ import annotations

from itertools import repeat

import numpy as np
from pyNN import common, errors
from pyNN.core import ezip
from pyNN.space import Space

from hxemu._proto import experiment_pb2
from hxemu.pynn import simulator, statistics
from hxemu.pynn.standardmodels.synapses import SIGN_RULE_MESSAGE, StaticSynapse

_RECEPTORS = {
    "excitatory": experiment_pb2.RECEPTOR_TYPE_EXCITATORY,
    "inhibitory": experiment_pb2.RECEPTOR_TYPE_INHIBITORY,
}


def _root(population):
    """(root population, function mapping local indices to root indices)."""
    if isinstance(population, common.PopulationView):
        return population.grandparent, population.index_in_grandparent
    return population, (lambda indices: indices)


class Connection(common.Connection):
    """One connection; weight in hardware LSB (float as given), delay in ms."""

    def __init__(self, pre, post, **attributes):
        self.presynaptic_index = pre
        self.postsynaptic_index = post
        for name, value in attributes.items():
            setattr(self, name, value)

    def as_tuple(self, *attribute_names):
        return tuple(getattr(self, name) for name in attribute_names)


class Projection(common.Projection):
    __doc__ = common.Projection.__doc__
    _simulator = simulator
    _static_synapse_class = StaticSynapse

    def __init__(self, presynaptic_population, postsynaptic_population,
                 connector, synapse_type=None, source=None, receptor_type=None,
                 space=Space(), label=None):
        for side, population in (("pre", presynaptic_population),
                                 ("post", postsynaptic_population)):
            if isinstance(population, common.Assembly):
                raise NotImplementedError(
                    f"Assemblies as {side}synaptic partner are not supported by hxemu.")
        if not getattr(postsynaptic_population.celltype, "records_on_chip", False):
            raise errors.ConnectionError(
                "Only projections with on-chip neuron population are supported.")
        common.Projection.__init__(self, presynaptic_population, postsynaptic_population,
                                   connector, synapse_type, source, receptor_type,
                                   space, label)
        if self.receptor_type not in _RECEPTORS:
            raise NotImplementedError(f"receptor_type {self.receptor_type!r}")
        self.connections = []
        connector.connect(self)
        self._simulator.state.projections.append(self)

    def __len__(self):
        return len(self.connections)

    def __getitem__(self, i):
        return self.connections[i]

    def _check(self, weight, delay):
        if delay is not None and delay != 0:
            raise ValueError("Setting the delay unequal 0 is not supported.")
        if not np.isfinite(weight):
            raise errors.ConnectionError(f"Weights must be finite, got {weight}")
        if weight < 0 if (self.receptor_type == "excitatory" or
                          self.post.conductance_based) else weight > 0:
            raise errors.ConnectionError(SIGN_RULE_MESSAGE)

    def _convergent_connect(self, presynaptic_indices, postsynaptic_index,
                            **connection_parameters):
        for name, value in connection_parameters.items():
            if isinstance(value, (float, int, np.number)):
                connection_parameters[name] = repeat(value)
        for pre_index, other in ezip(presynaptic_indices, *connection_parameters.values()):
            attributes = dict(zip(connection_parameters.keys(), other))
            self._check(attributes.get("weight", 0.0), attributes.get("delay", 0))
            self.connections.append(Connection(int(pre_index), int(postsynaptic_index),
                                               **attributes))

    def _set_attributes(self, parameter_space):
        parameter_space.evaluate(simplify=False)
        values = dict(parameter_space.items())
        for connection in self.connections:
            address = (connection.presynaptic_index, connection.postsynaptic_index)
            new = {name: value[address] for name, value in values.items()}
            self._check(new.get("weight", connection.weight),
                        new.get("delay", getattr(connection, "delay", 0)))
        for connection in self.connections:
            address = (connection.presynaptic_index, connection.postsynaptic_index)
            for name, value in values.items():
                setattr(connection, name, value[address])

    @property
    def placed_connections(self):
        """Per connection (in this projection's order): the hardware
        synapses of the last mapping (``run()`` or ``run(None,
        RunCommand.PREPARE)``), a list of
        :class:`hxemu.pynn.statistics.PlacedSynapse` (hemisphere, column,
        circuit, weight); a weight > 63 takes several synapses (123 -> 63 +
        60), weight 0 none. The synapse row is not reported by hxemu's
        server (pynn_brainscales gives SynapseOnDLS coordinates)."""
        state = self._simulator.state
        experiment = state.last_experiment
        if experiment is None or self not in state.projections or \
                state.projections.index(self) >= len(experiment.projections):
            raise RuntimeError("Placed connections are only available after "
                               "mapping, which happens in pynn.run() (or "
                               "pynn.run(None, pynn.RunCommand.PREPARE)).")
        return statistics.placed_connections(experiment, state.projections.index(self))

    def _set_initial_value_array(self, variable, initial_value):
        raise NotImplementedError("hxemu synapses have no state variables")

    def to_proto(self, message: experiment_pb2.Projection, state):
        """Fill ``message`` with this projection's explicit connection list."""
        pre_root, pre_map = _root(self.pre)
        post_root, post_map = _root(self.post)
        message.label = self.label or ""
        message.pre_population = state.populations.index(pre_root)
        message.post_population = state.populations.index(post_root)
        message.receptor_type = _RECEPTORS[self.receptor_type]
        if not self.connections:
            return
        pre = np.array([c.presynaptic_index for c in self.connections], dtype=np.int64)
        post = np.array([c.postsynaptic_index for c in self.connections], dtype=np.int64)
        weights = np.array([c.weight for c in self.connections], dtype=np.float64)
        message.pre_indices.extend(int(i) for i in np.asarray(pre_map(pre)))
        message.post_indices.extend(int(i) for i in np.asarray(post_map(post)))
        # the hardware uses |w|; the API's sign says the receptor (a
        # conductance-based neuron takes w >= 0 on both receptors)
        magnitudes = np.abs(np.round(weights)).astype(np.int64)
        sign = -1 if self.receptor_type == "inhibitory" else 1
        message.weights.extend(int(sign * w) for w in magnitudes)

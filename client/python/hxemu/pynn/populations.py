"""Population, PopulationView and Assembly of the hxemu PyNN backend."""

from __future__ import annotations

import numpy as np
from pyNN import common
from pyNN.parameters import ParameterSpace, simplify
from pyNN.standardmodels import StandardCellType

from hxemu.pynn import simulator
from hxemu.pynn.recording import DEVICES, Recorder

#: neuron circuits (AtomicNeuronOnDLS) of one chip
NUM_NEURON_CIRCUITS = 512


def _validate(celltype, name, value):
    check = getattr(celltype, "validate_native", None)
    if check is not None:
        check(name, value)


class _RecordMixin:
    """pynn_brainscales' record() signature: ``device="madc"`` (default: at
    most two neurons, any analog variable) or ``device="cadc"`` (the
    membrane "v" of any number of neurons, 8-bit codes every
    :data:`hxemu.pynn.experiment.CADC_PERIOD_MS`)."""

    def record(self, variables, to_file=None, sampling_interval=None,
               locations=None, *, device="madc"):
        if sampling_interval is not None:
            raise NotImplementedError("Sampling interval not implemented.")
        if locations is not None:
            raise NotImplementedError("Recording locations (multi-compartment "
                                      "neurons) are not supported by hxemu.")
        if device not in DEVICES:
            raise ValueError(f'Device "{device}" is not supported by hxemu '
                             f'(supported: {", ".join(map(repr, DEVICES))}; the '
                             'analog pads of the chip are not emulated)')
        recorder = self.recorder
        recorder.device = device
        try:
            super().record(variables, to_file=to_file)
        finally:
            recorder.device = "madc"


class Assembly(common.Assembly):
    __doc__ = common.Assembly.__doc__
    _simulator = simulator


class PopulationView(_RecordMixin, common.PopulationView):
    __doc__ = common.PopulationView.__doc__
    _assembly_class = Assembly
    _simulator = simulator

    def _get_parameters(self, *names):
        """A ParameterSpace with the native parameters of the view's cells."""
        parameter_dict = {}
        for name in names:
            value = self.grandparent._parameters[name]  # pylint: disable=protected-access
            if isinstance(value, np.ndarray):
                value = value[self._indices_in_root()]
            parameter_dict[name] = simplify(value)
        return ParameterSpace(parameter_dict, shape=(self.size,))

    def _indices_in_root(self):
        return self.index_in_grandparent(np.arange(self.size))

    def _set_parameters(self, parameter_space):
        """parameter_space contains native parameters."""
        root = self.grandparent
        for name, value in parameter_space.items():
            evaluated = value.evaluate(simplify=True)
            _validate(self.celltype, name, evaluated)
            root._parameters[name][self._indices_in_root()] = evaluated  # pylint: disable=protected-access
            root.mark_explicit(name, self._indices_in_root())

    def _set_initial_value_array(self, variable, initial_values):
        pass

    def _get_view(self, selector, label=None):
        return PopulationView(self, selector, label)


class Population(_RecordMixin, common.Population):
    __doc__ = common.Population.__doc__
    _simulator = simulator
    _recorder_class = Recorder
    _assembly_class = Assembly

    def _create_cells(self):
        state = self._simulator.state
        if getattr(self.celltype, "records_on_chip", False):
            # placement as pynn_brainscales' NeuronPlacement: one circuit
            # per neuron, from neuronPermutation if given
            permutation = state.neuron_permutation
            limit = NUM_NEURON_CIRCUITS if permutation is None else len(permutation)
            placed = sum(p.size for p in state.populations
                         if getattr(p.celltype, "records_on_chip", False))
            if placed + self.size > limit:
                raise ValueError(f"Cannot register more than {limit} neuron circuits.")
        id_range = np.arange(state.id_counter, state.id_counter + self.size)
        self.all_cells = np.array([simulator.ID(i) for i in id_range],
                                  dtype=simulator.ID)
        self._mask_local = np.ones((self.size,), bool)

        if isinstance(self.celltype, StandardCellType):
            parameter_space = self.celltype.native_parameters
        else:
            parameter_space = self.celltype.parameter_space
        parameter_space.shape = (self.size,)
        parameter_space.evaluate(mask=self._mask_local, simplify=False)
        for name, value in parameter_space.items():
            _validate(self.celltype, name, value)
        self._parameters = parameter_space.as_dict()

        # per parameter: which neurons the user gave a value (they win over
        # a calibration, see HXNeuron.to_proto)
        self._explicit = {name: np.ones(self.size, bool) for name in
                          getattr(self.celltype, "explicit_parameters", ())}

        for cell in self.all_cells:
            cell.parent = self
        state.id_counter += self.size
        state.populations.append(self)

    def _set_initial_value_array(self, variable, initial_values):
        pass

    def _get_view(self, selector, label=None):
        return PopulationView(self, selector, label)

    def _get_parameters(self, *names):
        """A ParameterSpace with the native parameters of all cells."""
        return ParameterSpace({name: simplify(self._parameters[name]) for name in names},
                              shape=(self.local_size,))

    def _set_parameters(self, parameter_space):
        """parameter_space contains native parameters."""
        parameter_space.evaluate(simplify=False, mask=self._mask_local)
        for name, value in parameter_space.items():
            _validate(self.celltype, name, value)
            self._parameters[name] = value
            self.mark_explicit(name, slice(None))

    def mark_explicit(self, name, indices):
        """Record that the user set parameter ``name`` of neurons ``indices``."""
        mask = self._explicit.setdefault(name, np.zeros(self.size, bool))
        mask[indices] = True

    def explicit_parameter_mask(self, name) -> np.ndarray:
        """Per neuron: whether the user set parameter ``name``."""
        return self._explicit.get(name, np.zeros(self.size, bool))

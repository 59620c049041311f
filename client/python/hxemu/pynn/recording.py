"""Recorder of the hxemu PyNN backend.

Produces the neo structure of pynn_brainscales: one Segment per reset period,
spikes as ``neo.SpikeTrain`` (PyNN's own code path), analog data as one
``neo.IrregularlySampledSignal`` per recorded neuron with float32 sample times
[ms] and float32 raw ADC codes (dimensionless).
"""

from __future__ import annotations

from copy import copy

import neo
import numpy as np
import pyNN.errors
import pyNN.recording
import quantities as pq

from hxemu.pynn import simulator
from hxemu.pynn.experiment import ANALOG_VARIABLES


#: analog recording devices: the fast ADC (MADC, 10 bit, at most two
#: neurons) and the parallel column ADC (CADC, 8 bit, every placed neuron)
DEVICES = ("madc", "cadc")


class Recorder(pyNN.recording.Recorder):
    _simulator = simulator

    def __init__(self, population, file=None):
        super().__init__(population, file=file)
        #: device of the record() call in progress (set by Population.record)
        self.device = "madc"
        #: cells whose "v" is read by the CADC
        self.cadc_ids = set()
        #: per analog variable: cells recorded by the MADC
        self.madc_ids = {variable: set() for variable in ANALOG_VARIABLES}

    def record(self, variables, ids, sampling_interval=None):
        if sampling_interval is not None:
            raise NotImplementedError("Sampling interval not implemented.")
        variables = pyNN.recording.normalize_variables_arg(variables)
        for variable in variables:
            if not self.population.can_record(variable):
                raise pyNN.errors.RecordingError(variable, self.population.celltype)
        if self.device == "cadc":
            unsupported = [v for v in variables if v in ANALOG_VARIABLES and v != "v"]
            if unsupported:
                raise NotImplementedError(
                    f"CADC recording of {unsupported}: hxemu's CADC reads the "
                    'membrane potential ("v") only; record the synaptic inputs '
                    'and the adaptation with device="madc"')
        # one analog observable per neuron (a single MADC input per neuron)
        analog = [v for v in variables if v in ANALOG_VARIABLES]
        if len(set(analog)) > 1:
            raise RuntimeError("Can only set 1 analog record type per neuron.")
        if analog:
            ids = {i for i in ids if i.local}
            for other in ANALOG_VARIABLES:
                if other != analog[0] and ids & self.recorded.get(other, set()):
                    raise RuntimeError("Can only set 1 analog record type per neuron.")
        super().record(variables, ids, sampling_interval)
        local = {i for i in ids if i.local}
        for variable in variables:
            if variable not in ANALOG_VARIABLES:
                continue
            if self.device == "cadc":
                self.cadc_ids |= local
            else:
                self.madc_ids[variable] |= local

    def _record(self, variable, new_ids, sampling_interval=None):
        pass

    def _population_index(self) -> int:
        return self._simulator.state.populations.index(self.population)

    def _data(self):
        return self._simulator.state.data

    def _get_spiketimes(self, ids, clear=False):
        data = self._data()
        index = self._population_index()
        result = {}
        for cell in ids:
            neuron = int(self.population.id_to_index(int(cell)))
            result[int(cell)] = data.spike_times(index, neuron) if data else np.zeros(0)
        return result

    def _get_all_signals(self, variable, ids, clear=False):
        raise NotImplementedError("analog data are built by _get_current_segment")

    def _analog_signals(self, variable, ids, device="madc"):
        data = self._data()
        if data is None:
            return []
        index = self._population_index()
        units = self.population.find_units(variable)
        signals = []
        wanted = self.madc_ids[variable] if device == "madc" else self.cadc_ids
        for cell in sorted(set(ids) & wanted):
            neuron = int(self.population.id_to_index(int(cell)))
            trace = data.trace(index, neuron, variable) if device == "madc" else \
                data.cadc_trace(index, neuron)
            if trace is None:
                continue
            times, codes = trace
            signals.append(neo.IrregularlySampledSignal(
                np.asarray(times, dtype=np.float32),
                np.asarray(codes, dtype=np.float32),
                units=units,
                time_units=pq.ms,
                name=variable,
                device=device,
                source_ids=[int(cell)],
                source_locations=["unlabeled"],
                source_population=self.population.label,
                source_compartments=[0],
                array_annotations={"channel_index": [neuron]},
            ))
        return signals

    def _get_current_segment(self, filter_ids=None, variables="all", clear=False):
        wanted = set(self.recorded)
        if variables != "all":
            wanted &= set(variables)
        # spikes: PyNN's own SpikeTrain construction
        segment = super()._get_current_segment(
            filter_ids=filter_ids, variables=["spikes"] if "spikes" in wanted else [],
            clear=clear)
        for variable in ANALOG_VARIABLES:
            if variable not in wanted:
                continue
            # as pynn_brainscales: the MADC signals, then the CADC ones
            for device in DEVICES if variable == "v" else ("madc",):
                for signal in self._analog_signals(
                        variable, self.filter_recorded(variable, filter_ids), device):
                    signal.segment = segment
                    segment.irregularlysampledsignals.append(signal)
        for train in segment.spiketrains:
            train.segment = segment
            # as pynn_brainscales (single-compartment neurons)
            train.annotate(source_location="unlabeled", source_compartment=0)
        if clear:
            self._clear_simulator()
        return segment

    def get(self, variables, gather=False, filter_ids=None, clear=False,
            annotations=None):
        block = super().get(variables, gather=gather, filter_ids=filter_ids,
                            clear=clear, annotations=annotations)
        variables = pyNN.recording.normalize_variables_arg(variables)
        if variables != "all":
            # PyNN's filter only knows AnalogSignals; filter cached segments'
            # IrregularlySampledSignals too (without touching the cache)
            segments = []
            for segment in block.segments:
                filtered = copy(segment)
                filtered.irregularlysampledsignals = [
                    s for s in segment.irregularlysampledsignals if s.name in variables]
                segments.append(filtered)
            block.segments = segments
        return block

    def _local_count(self, variable, filter_ids=None):
        if variable != "spikes":
            raise Exception("Only implemented for spikes")  # as PyNN
        counts = {}
        for cell, times in self._get_spiketimes(
                sorted(self.filter_recorded(variable, filter_ids))).items():
            counts[cell] = len(times)
        return counts

    def _clear_simulator(self):
        data = self._data()
        if data is None:
            return
        index = self._population_index()
        for key in [k for k in data.spikes if k[0] == index]:
            del data.spikes[key]
        for key in [k for k in data.traces if k[0] == index]:
            del data.traces[key]
        for key in [k for k in data.cadc if k[0] == index]:
            del data.cadc[key]

    def _reset(self):
        # record(None): nothing recorded any more, by any device
        self.cadc_ids = set()
        self.madc_ids = {variable: set() for variable in ANALOG_VARIABLES}

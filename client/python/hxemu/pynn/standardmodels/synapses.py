"""Synapse types of the hxemu PyNN backend."""

from pyNN.standardmodels import build_translations
from pyNN.standardmodels import synapses

from hxemu.pynn import simulator


class StaticSynapse(synapses.StaticSynapse):
    """Synaptic connection with fixed weight and delay.

    Weights are integer hardware LSB (rounded); on-chip synapses hold 6 bit
    (0..63), larger magnitudes are spread over several synapses by the
    server. Use weight >= 0 with receptor_type "excitatory" and weight <= 0
    with "inhibitory". The delay must be 0.
    """

    translations = build_translations(
        ("weight", "weight"),
        ("delay", "delay"),
    )

    def _get_minimum_delay(self):
        return simulator.state.min_delay

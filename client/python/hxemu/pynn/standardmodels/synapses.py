"""Synapse types of the hxemu PyNN backend."""

import numpy as np
from pyNN import errors
from pyNN.standardmodels import build_translations
from pyNN.standardmodels import synapses

from hxemu.pynn import simulator


#: pynn_brainscales' message for the sign rule
SIGN_RULE_MESSAGE = ("Weights must be positive for conductance-based and/or "
                     "excitatory synapses and negative for inhibitory synapses")


def check_weights(weights, projection):
    """The sign rule of pynn_brainscales: >= 0 for excitatory (or
    conductance-based) receptors, <= 0 for inhibitory ones."""
    values = np.asarray(weights, dtype=np.float64)
    if getattr(projection.post, "conductance_based", False) or \
            projection.receptor_type == "excitatory":
        wrong = np.any(values < 0)
    else:
        wrong = np.any(values > 0)
    if wrong:
        raise errors.ConnectionError(SIGN_RULE_MESSAGE)


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
    parameter_checks = {"weight": check_weights}

    def _get_minimum_delay(self):
        return simulator.state.min_delay

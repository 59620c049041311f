"""Standard models of the hxemu PyNN backend (cells, synapses)."""

from hxemu.pynn.standardmodels import cells, synapses

__all__ = ["cells", "synapses"]

"""pynn_brainscales' plasticity-rule API: ``Timer`` and ``PlasticityRule``.

On BrainScaleS-2 a plasticity rule is C++ code compiled for the chip's
plasticity processors (PPUs) and run periodically by a ``Timer``. hxemu
emulates the analog network, not the PPUs: :class:`Timer` is the same plain
description as in pynn_brainscales, but creating a :class:`PlasticityRule`
raises NotImplementedError (nothing could execute its kernel).
"""

from __future__ import annotations


class Timer:
    """Periodic timer of a plasticity rule: first execution at ``start``,
    then every ``period`` [ms hardware], ``num_periods`` times. Further
    keyword parameters are kept in :attr:`parameters` (as pynn_brainscales)."""

    def __init__(self, **parameters):
        self.start = parameters.pop("start")
        self.period = parameters.pop("period")
        self.num_periods = parameters.pop("num_periods")
        self.parameters = parameters

    def __repr__(self):
        return (f"Timer(start={self.start!r}, period={self.period!r}, "
                f"num_periods={self.num_periods!r})")


class PlasticityRule:
    """Plasticity rule base class (pynn_brainscales: a PPU kernel run by a
    :class:`Timer`). Not available on hxemu: the emulator has no plasticity
    processor, so constructing one raises NotImplementedError."""

    def __init__(self, timer: Timer, observables=None):
        raise NotImplementedError(
            "PlasticityRule: hxemu emulates no plasticity processor (PPU), so "
            "plasticity rule kernels cannot run; use static synapses "
            f"(timer={timer!r}, observables={observables!r})")

    def generate_kernel(self) -> str:
        """The PPU kernel source (see pynn_brainscales); never executed by hxemu."""
        raise NotImplementedError("hxemu runs no PPU kernels")

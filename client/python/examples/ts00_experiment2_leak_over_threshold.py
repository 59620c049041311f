#!/usr/bin/python3
"""BrainScaleS-2 tutorial "single neuron experiments", second experiment, on hxemu.

Leak over threshold: the leak potential lies above the threshold, so the
neuron charges, spikes, is reset and charges again (a sawtooth). The
notebook's sliders are replaced by a sweep over the leak conductance
(``leak_i_bias``, the membrane time constant) with the other sliders at their
defaults; every value gives one PNG in ``--out`` (default ``out/tutorial``).

Compared with the notebook only the import of the PyNN backend changed
(``pynn_brainscales.brainscales2`` -> ``hxemu.pynn``); the server is the one in
``HXEMU_ADDRESS`` (host:port), else an embedded ``hxemu-server``.

    /usr/bin/python3 client/python/examples/ts00_experiment2_leak_over_threshold.py --out out/tutorial
"""

import argparse
import sys
from pathlib import Path

import matplotlib
matplotlib.use("Agg")  # files instead of a notebook
import matplotlib.pyplot as plt

try:  # not needed when hxemu is installed (pip install -e client/python)
    import hxemu  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# --- tutorial code; only the import of the backend differs -------------------
import hxemu.pynn as pynn
from hxemu.pynn import Population


def plot_membrane_dynamics(population: Population, segment_id=-1, ylim=None):
    """Plot the membrane trace of a population (or view) of size 1.

    :param population: population whose recorded "v" is plotted
    :param segment_id: neo segment to plot, -1 = the last one
    :param ylim: y-axis limits
    """
    if len(population) != 1:
        raise ValueError("Plotting is supported for populations of size 1.")
    # results come in the neo format
    mem_v = population.get_data("v").segments[segment_id].irregularlysampledsignals[0]
    plt.plot(mem_v.times, mem_v, alpha=0.5)
    print(f"Mean membrane potential: {mem_v.mean()}")
    plt.xlabel("Wall clock time [ms]")
    plt.ylabel("ADC readout [a.u.]")
    if ylim:
        plt.ylim(ylim)


def experiment(v_leak, v_threshold, v_reset, i_bias_leak, filename):
    """Set up a leak over threshold neuron.

    :param v_leak: Leak potential.
    :param v_threshold: Spike threshold potential.
    :param v_reset: Reset potential.
    :param i_bias_leak: Controls the leak conductance (membrane time constant).
    """

    plt.figure()
    plt.title("Second experiment: Leak over threshold")

    pynn.setup()

    pop = pynn.Population(1, pynn.cells.HXNeuron(
        # Leak potential, range: 400-1000
        leak_v_leak=v_leak,
        # Leak conductance, range: 0-1022
        leak_i_bias=i_bias_leak,
        # Threshold potential, range: 0-500
        threshold_v_threshold=v_threshold,
        # Reset potential, range: 300-1000
        reset_v_reset=v_reset,
        # Membrane capacitance, range: 0-63
        membrane_capacitance_capacitance=63,
        # Refractory time (counter), range: 0-255
        refractory_period_refractory_time=255,
        # Enable reset on threshold crossing
        threshold_enable=True,
        # Reset conductance, range: 0-1022
        reset_i_bias=1022,
        # Increase reset conductance
        reset_enable_multiplication=True))

    pop.record(["v", "spikes"])
    pynn.run(0.2)
    plot_membrane_dynamics(pop, ylim=(100, 800))
    print(f"Spikes: {len(pop.get_data('spikes').segments[-1].spiketrains[0])}")
    plt.savefig(filename)  # the notebook shows the figure instead
    plt.close()
    pynn.end()
# --- end of tutorial code -----------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="out/tutorial", help="output folder for the PNGs")
    parser.add_argument("--i-bias-leak", type=int, nargs="+", default=[100, 150, 200, 300],
                        help="leak_i_bias values to sweep")
    parser.add_argument("--v-leak", type=int, default=1000)
    parser.add_argument("--v-threshold", type=int, default=300)
    parser.add_argument("--v-reset", type=int, default=400)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for i_bias_leak in args.i_bias_leak:
        filename = out / f"ts00_experiment2_leak_over_threshold_i_bias_{i_bias_leak}.png"
        experiment(args.v_leak, args.v_threshold, args.v_reset, i_bias_leak, filename)
        print(f"wrote {filename}")


if __name__ == "__main__":
    main()

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

# matplotlib into files, hxemu importable from the checkout, the notebook's helper
from tutorial_common import arguments, plot_membrane_dynamics, plt

# --- tutorial code; only the import of the backend differs -------------------
import hxemu.pynn as pynn


def experiment(v_leak, v_threshold, v_reset, i_bias_leak, filename):
    """Set up a leak over threshold neuron.

    :param v_leak: Leak potential.
    :param v_threshold: Spike threshold potential.
    :param v_reset: Reset potential.
    :param i_bias_leak: Controls the leak conductance (membrane time constant).
    :returns: the membrane trace (MADC codes) and the spike train
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
    spikes = pop.get_data("spikes").segments[-1].spiketrains[0]
    print(f"Spikes: {len(spikes)}")
    plt.savefig(filename)  # the notebook shows the figure instead
    plt.close()
    mem_v = pop.get_data("v").segments[-1].irregularlysampledsignals[0]
    pynn.end()
    return mem_v, spikes
# --- end of tutorial code -----------------------------------------------------


def main(argv=None):
    def options(parser):
        parser.add_argument("--i-bias-leak", type=int, nargs="+", default=[100, 150, 200, 300],
                            help="leak_i_bias values to sweep")
        parser.add_argument("--v-leak", type=int, default=1000)
        parser.add_argument("--v-threshold", type=int, default=300)
        parser.add_argument("--v-reset", type=int, default=400)
    args, out = arguments(__doc__, argv, options)
    for i_bias_leak in args.i_bias_leak:
        filename = out / f"ts00_experiment2_leak_over_threshold_i_bias_{i_bias_leak}.png"
        experiment(args.v_leak, args.v_threshold, args.v_reset, i_bias_leak, filename)
        print(f"wrote {filename}")


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""BrainScaleS-2 tutorial "single neuron experiments", first experiment, on hxemu.

A single silent neuron: its membrane settles at the leak potential. The
notebook's slider over ``leak_v_leak`` is replaced by a small sweep; every
value gives one PNG in ``--out`` (default ``out/tutorial``).

Compared with the notebook only the import of the PyNN backend changed
(``pynn_brainscales.brainscales2`` -> ``hxemu.pynn``); the server is the one in
``HXEMU_ADDRESS`` (host:port), else an embedded ``hxemu-server``.

    /usr/bin/python3 client/python/examples/ts00_experiment1_silent_neuron.py --out out/tutorial
"""

# matplotlib into files, hxemu importable from the checkout, the notebook's helper
from tutorial_common import arguments, plot_membrane_dynamics, plt

# --- tutorial code; only the import of the backend differs -------------------
import hxemu.pynn as pynn


def experiment(v_leak, filename):
    """Run the silent neuron; returns its membrane trace (MADC codes)."""
    plt.figure()
    plt.title("First experiment: A silent neuron")

    pynn.setup()

    pop = pynn.Population(1, pynn.cells.HXNeuron(
        # Leak potential, range: 400-1000
        leak_v_leak=v_leak,
        # Leak conductance, range: 0-1022
        leak_i_bias=1022))

    # record the membrane potential through the fast ADC (MADC)
    pop.record(["v"])

    # run for 0.2 ms of hardware time
    pynn.run(0.2)

    plot_membrane_dynamics(pop, ylim=(100, 800))
    plt.savefig(filename)  # the notebook shows the figure instead
    plt.close()
    mem_v = pop.get_data("v").segments[-1].irregularlysampledsignals[0]

    # release the connection; the next experiment starts with pynn.setup()
    pynn.end()
    return mem_v
# --- end of tutorial code -----------------------------------------------------


def main(argv=None):
    args, out = arguments(__doc__, argv, lambda parser: parser.add_argument(
        "--v-leak", type=int, nargs="+", default=[400, 550, 700, 850, 1000],
        help="leak_v_leak values to sweep (the notebook's slider)"))
    for v_leak in args.v_leak:
        filename = out / f"ts00_experiment1_silent_neuron_v_leak_{v_leak}.png"
        experiment(v_leak, filename)
        print(f"wrote {filename}")


if __name__ == "__main__":
    main()

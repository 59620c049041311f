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


def experiment(v_leak, filename):
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

    # release the connection; the next experiment starts with pynn.setup()
    pynn.end()
# --- end of tutorial code -----------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="out/tutorial", help="output folder for the PNGs")
    parser.add_argument("--v-leak", type=int, nargs="+", default=[400, 550, 700, 850, 1000],
                        help="leak_v_leak values to sweep (the notebook's slider)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for v_leak in args.v_leak:
        filename = out / f"ts00_experiment1_silent_neuron_v_leak_{v_leak}.png"
        experiment(v_leak, filename)
        print(f"wrote {filename}")


if __name__ == "__main__":
    main()

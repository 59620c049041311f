#!/usr/bin/python3
"""BrainScaleS-2 tutorial "single neuron experiments", third experiment, on hxemu.

Fixed-pattern variations: ten neurons with the same leak-over-threshold
parameters, recorded one after the other (one PopulationView per run, reset
in between). The traces differ in threshold, reset plateau and slope
(circuit mismatch of the emulated chip) and are not aligned in time. All ten
traces go into one PNG in ``--out`` (default ``out/tutorial``).

Parameters are the notebook's, except ``threshold_v_threshold``: the notebook
uses 500, which on hxemu's emulated chip lies above the membrane's leak level
for ``leak_v_leak=1000`` (the neurons never spike, the traces only show
resting levels). The default here is 300, as in pynn-brainscales' own
``examples/single_neuron_demo.py``; ``--v-threshold 500`` runs the notebook's
value.

Compared with the notebook only the import of the PyNN backend changed
(``pynn_brainscales.brainscales2`` -> ``hxemu.pynn``); the server is the one in
``HXEMU_ADDRESS`` (host:port), else an embedded ``hxemu-server``.

    /usr/bin/python3 client/python/examples/ts00_experiment3_fixed_pattern.py --out out/tutorial
"""

# matplotlib into files, hxemu importable from the checkout, the notebook's helper
from tutorial_common import arguments, plot_membrane_dynamics, plt

# --- tutorial code; only the import of the backend differs -------------------
import hxemu.pynn as pynn


def experiment(filename, size=10, runtime=0.1, v_threshold=300):
    """Record the membrane of ``size`` identically configured neurons, one
    per run; returns the recorded signals (one per neuron)."""

    plt.figure()
    plt.title("Third experiment: Fixed-pattern variations")

    pynn.setup()

    pop = pynn.Population(size, pynn.cells.HXNeuron(
        # Leak potential, range: 400-1000
        leak_v_leak=1000,
        # Leak conductance, range: 0-1022
        leak_i_bias=200,
        # Threshold potential, range: 0-600
        threshold_v_threshold=v_threshold,
        # Reset potential, range: 300-1000
        reset_v_reset=400,
        # Membrane capacitance, range: 0-63
        membrane_capacitance_capacitance=63,
        # Refractory time, range: 0-255
        refractory_period_refractory_time=255,
        # Enable reset on threshold crossing
        threshold_enable=True,
        # Reset conductance, range: 0-1022
        reset_i_bias=1022,
        # Increase reset conductance
        reset_enable_multiplication=True))

    for neuron_id in range(len(pop)):
        print(f"Recording fixed-pattern variations: Run {neuron_id}")
        p_view = pynn.PopulationView(pop, [neuron_id])
        p_view.record(["v"])
        pynn.run(runtime)
        plot_membrane_dynamics(p_view, ylim=(100, 800))
        pynn.reset()
        pop.record(None)

    plt.savefig(filename)  # the notebook shows the figure instead
    plt.close()
    # one segment per run; segment k holds neuron k's trace
    signals = [segment.irregularlysampledsignals[0]
               for segment in pop.get_data("v").segments[:size]]
    pynn.end()
    return signals
# --- end of tutorial code -----------------------------------------------------


def main(argv=None):
    def options(parser):
        parser.add_argument("--neurons", type=int, default=10, help="number of neurons")
        parser.add_argument("--runtime", type=float, default=0.1,
                            help="runtime per neuron [ms hardware]")
        parser.add_argument("--v-threshold", type=int, default=300,
                            help="threshold_v_threshold (the notebook: 500, see above)")
    args, out = arguments(__doc__, argv, options)
    filename = out / "ts00_experiment3_fixed_pattern.png"
    experiment(filename, args.neurons, args.runtime, args.v_threshold)
    print(f"wrote {filename}")


if __name__ == "__main__":
    main()

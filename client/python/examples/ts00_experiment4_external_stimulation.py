#!/usr/bin/python3
"""BrainScaleS-2 tutorial "single neuron experiments", fourth experiment, on hxemu.

External stimulation: a calibrated neuron receives six input spikes from two
SpikeSourceArray populations, five through an excitatory projection and the
second one through an inhibitory projection; its membrane shows five upward
and one downward post-synaptic potential. The neuron uses the server's
calibration of the emulated chip (``pynn.helper.chip_from_nightly()`` and
``pynn.setup(initial_config=calib)``, as the notebook's nightly calibration).
The notebook's sliders are replaced by a sweep over the weights (the same
value for both projections) at the notebook's default inter-spike interval;
every value gives one PNG in ``--out`` (default ``out/tutorial``).

Compared with the notebook only the import of the PyNN backend changed
(``pynn_brainscales.brainscales2`` -> ``hxemu.pynn``) and the nightly
calibration comes from ``pynn.helper``; the server is the one in
``HXEMU_ADDRESS`` (host:port), else an embedded ``hxemu-server``.

    /usr/bin/python3 client/python/examples/ts00_experiment4_external_stimulation.py --out out/tutorial
"""

import numpy as np

# matplotlib into files, hxemu importable from the checkout, the notebook's helper
from tutorial_common import arguments, plot_membrane_dynamics, plt

# --- tutorial code; only the import of the backend differs -------------------
import hxemu.pynn as pynn
from hxemu.pynn.standardmodels.cells import SpikeSourceArray
from hxemu.pynn.standardmodels.synapses import StaticSynapse


# the notebook loads the nightly calibration of its setup once, up front
calib = None


def run_experiment(exc_weight: int, inh_weight: int, isi: float, filename=None,
                   runtime=0.6):
    """Run external input demonstration on (emulated) BSS-2.

    Adjust weight of projections, set input spikes and execute experiment.

    :param exc_weight: Weight of excitatory synaptic inputs, value range
        [0,63].
    :param inh_weight: Weight of inhibitory synaptic inputs, value range
        [0,63].
    :param isi: Time between synaptic inputs in microsecond (hardware
        domain)
    :param filename: PNG to write (the notebook shows the figure instead)
    :returns: the recorded membrane trace (neo.IrregularlySampledSignal) and
        the input spike times [ms] with a flag per spike: excitatory?
    """
    plt.figure()
    plt.title("Fourth experiment: External stimulation")

    pynn.setup(initial_config=calib)

    # use calibrated parameters for neuron
    stimulated_p = pynn.Population(1, pynn.cells.HXNeuron())
    stimulated_p.record(["v", "spikes"])

    # calculate spike times
    wait_before_experiment = 0.01  # ms (hw)
    isi_ms = isi / 1000  # convert to ms
    spiketimes = np.arange(6) * isi_ms + wait_before_experiment

    # all but one input are chosen to be exciatory
    excitatory_spike = np.ones_like(spiketimes, dtype=bool)
    excitatory_spike[1] = False

    # external input
    exc_spikes = spiketimes[excitatory_spike]
    exc_stim_pop = pynn.Population(2, SpikeSourceArray(spike_times=exc_spikes))
    pynn.Projection(exc_stim_pop, stimulated_p,
                    pynn.AllToAllConnector(),
                    synapse_type=StaticSynapse(weight=exc_weight),
                    receptor_type="excitatory")

    inh_spikes = spiketimes[~excitatory_spike]
    inh_stim_pop = pynn.Population(2, SpikeSourceArray(spike_times=inh_spikes))
    pynn.Projection(inh_stim_pop, stimulated_p,
                    pynn.AllToAllConnector(),
                    synapse_type=StaticSynapse(weight=-inh_weight),
                    receptor_type="inhibitory")

    # run experiment
    pynn.run(runtime)
    plot_membrane_dynamics(stimulated_p, ylim=(100, 600))
    trace = stimulated_p.get_data("v").segments[-1].irregularlysampledsignals[0]
    if filename is not None:
        plt.savefig(filename)
    plt.close()
    pynn.end()
    return trace, spiketimes, excitatory_spike
# --- end of tutorial code -----------------------------------------------------


def main(argv=None):
    global calib  # pylint: disable=global-statement

    def options(parser):
        parser.add_argument("--weights", type=int, nargs="+", default=[15, 31, 63],
                            help="weights to sweep (excitatory and inhibitory alike)")
        parser.add_argument("--isi", type=float, default=50,
                            help="time between inputs [us hardware]")
    args, out = arguments(__doc__, argv, options)
    calib = pynn.helper.chip_from_nightly()
    print(f"calibration of chip {calib.chip_id}: {len(calib.circuits)} circuits, "
          f"{calib.num_failed} failed")
    for weight in args.weights:
        filename = out / f"ts00_experiment4_external_stimulation_weight_{weight}.png"
        run_experiment(weight, weight, args.isi, filename)
        print(f"wrote {filename}")


if __name__ == "__main__":
    main()

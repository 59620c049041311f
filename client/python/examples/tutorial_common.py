"""What the ts00 tutorial scripts share (not tutorial code itself).

* matplotlib draws into files (the notebook shows the figures instead);
* ``hxemu`` is importable from this checkout when it is not installed
  (``pip install -e client/python`` makes that unnecessary);
* the notebook's helper :func:`plot_membrane_dynamics`;
* :func:`arguments`: the command line every script takes (``--out`` folder of
  the PNGs, created, plus the script's own options).
"""

import argparse
import sys
from pathlib import Path

import matplotlib
matplotlib.use("Agg")  # files instead of a notebook
import matplotlib.pyplot as plt  # noqa: E402

try:  # not needed when hxemu is installed (pip install -e client/python)
    import hxemu  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def plot_membrane_dynamics(population, segment_id=-1, ylim=None):
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


def arguments(doc: str, argv=None, add_options=None):
    """Parse the command line of a tutorial script: ``--out`` (default
    ``out/tutorial``, created) and what ``add_options(parser)`` adds.
    Returns (namespace, output folder as a Path)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--out", default="out/tutorial", help="output folder for the PNGs")
    if add_options is not None:
        add_options(parser)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    return args, out

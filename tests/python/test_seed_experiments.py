"""The seed tutorial (brainscales2-demos ts_00 "single neuron") on the real server.

The experiments are the example scripts' functions (client/python/examples,
the notebook's code with ``import hxemu.pynn as pynn``); the tests replace
the notebook's sliders by sweeps and its plots by measurements.
"""

import importlib
import os
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "client" / "python" / "examples"


@pytest.fixture
def examples(server_address, monkeypatch):
    """Import an example script's module by name (the scripts import their
    shared tutorial_common from the examples folder)."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    yield importlib.import_module
    import hxemu.pynn  # pylint: disable=import-outside-toplevel
    hxemu.pynn.end()  # should an example have failed before its end()


def test_silent_neuron_follows_leak_potential(examples, tmp_path):
    example = examples("ts00_experiment1_silent_neuron")
    sweep = [400, 600, 800, 1000]
    means = []
    for v_leak in sweep:
        mem_v = example.experiment(v_leak, tmp_path / f"silent_{v_leak}.png")
        values = mem_v.magnitude.ravel()
        assert len(values) > 1000  # 0.2 ms at ~34 ns per sample
        # flat: after settling, the trace stays close to its mean
        settled = values[len(values) // 4:]
        assert np.ptp(settled) < 0.2 * max(np.mean(settled), 1), (v_leak, np.ptp(settled))
        means.append(float(np.mean(settled)))
    assert all(b > a for a, b in zip(means, means[1:])), f"means not rising: {means}"
    assert all(0 < m < 1023 for m in means)


def _spike_stats(spikes):
    times = np.sort(spikes.magnitude)
    isi = np.diff(times)
    return len(times), (float(np.std(isi) / np.mean(isi)) if len(isi) > 1 else np.inf)


def test_leak_over_threshold_spikes_regularly(examples, tmp_path):
    example = examples("ts00_experiment2_leak_over_threshold")
    # the notebook's slider defaults
    mem_v, spikes = example.experiment(1000, 300, 400, 150, tmp_path / "leak.png")
    count, cv = _spike_stats(spikes)
    assert count >= 3, f"only {count} spikes in 0.2 ms"
    assert cv < 0.2, f"irregular spiking: ISI CV {cv:.2f}"
    assert spikes.t_stop.magnitude == pytest.approx(0.2)
    values = mem_v.magnitude.ravel()
    assert np.ptp(values) > 50  # a sawtooth, not a flat line


def test_rate_rises_with_leak_conductance(examples, tmp_path):
    example = examples("ts00_experiment2_leak_over_threshold")
    counts = []
    for i_bias_leak in [100, 150, 200, 300]:
        _, spikes = example.experiment(1000, 300, 400, i_bias_leak,
                                       tmp_path / f"leak_{i_bias_leak}.png")
        count, cv = _spike_stats(spikes)
        assert cv < 0.2, f"i_bias_leak={i_bias_leak}: ISI CV {cv:.2f}"
        counts.append(count)
    assert all(b >= a for a, b in zip(counts, counts[1:])), f"rates not rising: {counts}"
    assert counts[-1] > counts[0], f"rates not rising: {counts}"


def _cycle_features(signal):
    """(threshold, reset plateau, slope [LSB/us], first spike time [ms]) of a
    leak-over-threshold sawtooth trace."""
    times = signal.times.magnitude.astype(np.float64)
    values = signal.magnitude.ravel().astype(np.float64)
    smooth = np.convolve(values, np.ones(9) / 9, mode="same")[4:-4]
    t = times[4:-4]
    drops = np.flatnonzero(np.diff(smooth) < -8)  # the reset after a spike
    spikes = drops[np.insert(np.diff(drops) > 20, 0, True)]
    threshold = values.max()
    plateau = np.percentile(values, 3)
    low = plateau + 0.3 * (threshold - plateau)
    high = plateau + 0.7 * (threshold - plateau)
    slopes = []
    for begin, end in zip(spikes[:-1], spikes[1:]):
        bottom = begin + int(np.argmin(smooth[begin:end]))  # end of the reset
        rise_t, rise_v = t[bottom:end], smooth[bottom:end]
        a, b = np.argmax(rise_v > low), np.argmax(rise_v > high)
        if b > a > 0:
            slopes.append((rise_v[b] - rise_v[a]) / (rise_t[b] - rise_t[a]) / 1e3)
    return threshold, plateau, np.median(slopes), t[spikes[0]]


def test_fixed_pattern_variations(examples, tmp_path):
    """Experiment 3: same parameters, ten neurons: different thresholds,
    reset plateaus and slopes, and no common time origin. (The job seeds come
    from numpy's global RNG, seeded here: one fixed draw of the free-running
    starts, so that the spread asserted below is not left to chance.)"""
    np.random.seed(20261206)
    example = examples("ts00_experiment3_fixed_pattern")
    signals = example.experiment(tmp_path / "fixed_pattern.png")
    assert (tmp_path / "fixed_pattern.png").stat().st_size > 5000
    assert len(signals) == 10
    assert [s.annotations["source_ids"][0] for s in signals] == list(range(10)) or \
        len({s.annotations["source_ids"][0] for s in signals}) == 10
    features = np.array([_cycle_features(s) for s in signals])
    threshold, plateau, slope, first_spike = features.T
    # every neuron spikes regularly (leak over threshold)
    assert np.all(threshold - plateau > 100), features
    # circuit mismatch: all ten differ, by more than the readout noise
    assert len(np.unique(threshold)) >= 7 and np.ptp(threshold) > 15, threshold
    assert len(np.unique(plateau)) >= 5 and np.ptp(plateau) > 10, plateau
    assert np.ptp(slope) / np.mean(slope) > 0.03, slope
    # temporal misalignment: the first spikes are spread over the period
    assert np.ptp(first_spike) > 0.005, first_spike
    assert len(np.unique(np.round(first_spike, 4))) >= 6, first_spike


def _require_calibration_api():
    from hxemu._proto import service_pb2
    if not hasattr(service_pb2, "GetCalibrationRequest"):
        pytest.skip("this hxemu API has no GetCalibration RPC yet (issue 5)")


def _responses(signal, spike_times, window_ms):
    """Per input spike: the largest deviation of the membrane from its level
    just before the input, within ``window_ms`` after it [ADC LSB] (the sign
    of the larger of the upward and the downward excursion)."""
    times = signal.times.magnitude.astype(np.float64)
    values = np.convolve(signal.magnitude.ravel().astype(np.float64),
                         np.ones(7) / 7, mode="same")
    responses = []
    for t in spike_times:
        before = values[(times > t - 0.004) & (times <= t)]
        after = values[(times > t) & (times < t + window_ms)]
        base = np.median(before)
        up, down = after.max() - base, after.min() - base
        responses.append(up if up >= -down else down)
    return np.array(responses), float(np.median(values[times < spike_times[0]]))


def test_external_stimulation(examples, tmp_path):
    """Experiment 4: a calibrated neuron (server calibration as
    initial_config); the excitatory inputs raise the membrane, the
    inhibitory one lowers it, and larger weights give larger responses."""
    _require_calibration_api()
    example = examples("ts00_experiment4_external_stimulation")
    example.calib = example.pynn.helper.chip_from_nightly()
    assert len(example.calib.circuits) == 512
    amplitude = {}
    for weight in (15, 63):
        png = tmp_path / f"stimulation_{weight}.png"
        trace, spike_times, excitatory = example.run_experiment(weight, weight, 50, png)
        assert png.stat().st_size > 5000
        assert trace.times.magnitude[-1] == pytest.approx(0.6, abs=0.001)
        responses, rest = _responses(trace, spike_times, 0.04)
        assert 100 < rest < 900, rest  # a calibrated resting level on the ADC
        assert np.all(responses[excitatory] > 4), (weight, responses)
        assert np.all(responses[~excitatory] < -4), (weight, responses)
        amplitude[weight] = (np.median(responses[excitatory]),
                             -responses[~excitatory][0])
    # larger weights: larger excitatory and inhibitory responses
    assert amplitude[63][0] > 1.5 * amplitude[15][0], amplitude
    assert amplitude[63][1] > 1.5 * amplitude[15][1], amplitude


@pytest.mark.parametrize("script, prefix, n_files, how", [
    ("ts00_experiment1_silent_neuron.py", "ts00_experiment1_silent_neuron_", 5,
     "subprocess"),
    ("ts00_experiment2_leak_over_threshold.py", "ts00_experiment2_leak_over_threshold_", 4,
     "in-process"),
    ("ts00_experiment3_fixed_pattern.py", "ts00_experiment3_fixed_pattern", 1,
     "in-process"),
    ("ts00_experiment4_external_stimulation.py", "ts00_experiment4_external_stimulation_",
     3, "in-process"),
])
def test_examples_write_plots(server_address, tmp_path, capsys, monkeypatch, script,
                              prefix, n_files, how):
    """The scripts deploy/run-tutorial.sh runs, with their default sweeps.
    One runs as run-tutorial.sh runs it (a fresh interpreter without
    PYTHONPATH, the embedded server); the others run in this interpreter
    (``python3 SCRIPT --out DIR`` via runpy) against the session's server,
    which saves an interpreter start each."""
    if "experiment4" in script:
        _require_calibration_api()
    out = tmp_path / "plots"
    if how == "subprocess":
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)  # the examples find the package by themselves
        env.pop("HXEMU_ADDRESS", None)
        from hxemu._server import ServerStartError, find_server_binary
        try:
            find_server_binary()
        except ServerStartError as err:
            pytest.skip(str(err))
        run = subprocess.run([sys.executable, str(EXAMPLES / script), "--out", str(out)],
                             env=env, capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stderr
        stdout = run.stdout
    else:
        monkeypatch.setattr(sys, "argv", [str(EXAMPLES / script), "--out", str(out)])
        # what "python3 SCRIPT" puts first on sys.path (runpy does not)
        monkeypatch.syspath_prepend(str(EXAMPLES))
        runpy.run_path(str(EXAMPLES / script), run_name="__main__")
        stdout = capsys.readouterr().out
    written = sorted(out.glob(f"{prefix}*.png"))
    assert len(written) == n_files
    for path in written:
        assert f"wrote {path}" in stdout
        assert path.stat().st_size > 5000

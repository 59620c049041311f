"""hxemu.compat: opt-in ``import pynn_brainscales.brainscales2``.

Every check runs in a fresh interpreter, so that ``sys.modules`` and
``sys.meta_path`` of the test session stay untouched.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

CLIENT = Path(__file__).resolve().parents[2] / "client" / "python"

IMPORTS = """
        import pynn_brainscales.brainscales2 as pynn
        from pynn_brainscales.brainscales2 import Population
        from pynn_brainscales.brainscales2.standardmodels.cells import SpikeSourceArray
        from pynn_brainscales.brainscales2.standardmodels.synapses import StaticSynapse
        """


def run_python(code, tmp_path, env_extra=None, extra_path=(), args=()):
    env = dict(os.environ)
    env.pop("HXEMU_PROVIDE_PYNN_BRAINSCALES", None)
    env.update(env_extra or {})
    env["PYTHONPATH"] = os.pathsep.join([*map(str, extra_path), str(CLIENT)])
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(code))
    return subprocess.run([sys.executable, *args, str(script)], env=env,
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)


def test_not_provided_without_opt_in(tmp_path):
    run = run_python("""
        import hxemu, hxemu.pynn
        try:
            import pynn_brainscales
        except ModuleNotFoundError:
            print("absent")
        """, tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "absent"


def test_install_provides_the_same_modules(tmp_path):
    run = run_python("""
        import hxemu.compat
        assert hxemu.compat.install()
        """ + IMPORTS + """
        import hxemu.pynn
        from hxemu.pynn.standardmodels import cells, synapses
        assert pynn is hxemu.pynn
        assert Population is hxemu.pynn.Population
        assert SpikeSourceArray is cells.SpikeSourceArray
        assert StaticSynapse is synapses.StaticSynapse
        import pynn_brainscales.brainscales2.standardmodels as sm
        assert sm is hxemu.pynn.standardmodels
        from pynn_brainscales.brainscales2 import helper
        from pynn_brainscales.brainscales2.helper import chip_from_file
        assert helper is hxemu.pynn.helper and chip_from_file is helper.chip_from_file
        try:
            import pynn_brainscales.brainscales2.no_such_module
        except ModuleNotFoundError as err:
            print("missing", err.name)
        print("ok")
        """, tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["missing", "pynn_brainscales.brainscales2.no_such_module",
                                  "ok"]


def test_install_is_idempotent_and_uninstall_forgets(tmp_path):
    run = run_python("""
        import sys
        import hxemu.compat as compat
        assert compat.install() and compat.install()
        assert sum(isinstance(f, compat.PynnBrainscalesFinder) for f in sys.meta_path) == 1
        import pynn_brainscales.brainscales2
        compat.uninstall()
        assert not compat.installed()
        assert not [n for n in sys.modules if n.startswith("pynn_brainscales")]
        try:
            import pynn_brainscales
        except ModuleNotFoundError:
            print("gone")
        """, tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "gone"


@pytest.mark.parametrize("value, provided", [("1", True), ("true", True),
                                             ("0", False), ("", False)])
def test_environment_variable(tmp_path, value, provided):
    run = run_python("""
        import hxemu
        try:
            import pynn_brainscales.brainscales2 as pynn
            import hxemu.pynn
            print("provided", pynn is hxemu.pynn)
        except ModuleNotFoundError:
            print("absent")
        """, tmp_path, {"HXEMU_PROVIDE_PYNN_BRAINSCALES": value})
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == ("provided True" if provided else "absent")


def test_module_runner(tmp_path):
    run = run_python(IMPORTS + """
        import sys
        import hxemu.pynn
        print(pynn is hxemu.pynn, sys.argv[1:])
        """, tmp_path, args=("-m", "hxemu.compat"))
    # run_python puts the script last; the runner passes no extra args here
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "True []"


def test_module_runner_usage(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(CLIENT))
    run = subprocess.run([sys.executable, "-m", "hxemu.compat"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "usage" in run.stderr


@pytest.fixture
def real_pynn_brainscales(tmp_path):
    """A stand-in for an installed pynn_brainscales (site directory)."""
    site = tmp_path / "site"
    package = site / "pynn_brainscales"
    (package / "brainscales2" / "standardmodels").mkdir(parents=True)
    (package / "__init__.py").write_text("REAL = True\n")
    (package / "brainscales2" / "__init__.py").write_text("REAL = True\n")
    (package / "brainscales2" / "standardmodels" / "__init__.py").write_text("")
    (package / "brainscales2" / "standardmodels" / "cells.py").write_text("REAL = True\n")
    return site


@pytest.mark.parametrize("opt_in", ["install", "environment"])
def test_does_not_shadow_an_installed_pynn_brainscales(tmp_path, real_pynn_brainscales,
                                                       opt_in):
    code = """
        import hxemu.compat
        result = hxemu.compat.install()
        import pynn_brainscales.brainscales2 as pynn
        import pynn_brainscales.brainscales2.standardmodels.cells as cells
        print(result, pynn.REAL, cells.REAL, hxemu.compat.installed())
        try:
            import pynn_brainscales.brainscales2.populations
        except ModuleNotFoundError:
            print("no fallback to hxemu")
        """
    env = {"HXEMU_PROVIDE_PYNN_BRAINSCALES": "1"} if opt_in == "environment" else {}
    run = run_python(code, tmp_path, env, extra_path=[real_pynn_brainscales])
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == ["False True True False", "no fallback to hxemu"]


def test_does_not_shadow_one_found_after_install(tmp_path, real_pynn_brainscales):
    """Installed first, then a real pynn_brainscales appears on sys.path."""
    run = run_python(f"""
        import sys
        import hxemu.compat
        assert hxemu.compat.install()
        sys.path.insert(0, {str(real_pynn_brainscales)!r})
        import pynn_brainscales.brainscales2 as pynn
        print(pynn.REAL)
        """, tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "True"


def test_does_not_touch_an_imported_pynn_brainscales(tmp_path, real_pynn_brainscales):
    run = run_python("""
        import pynn_brainscales
        import hxemu.compat
        print(hxemu.compat.install(), hxemu.compat.installed())
        """, tmp_path, extra_path=[real_pynn_brainscales])
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "False False"


def test_module_runner_with_a_real_pynn_brainscales(tmp_path, real_pynn_brainscales):
    run = run_python("""
        import pynn_brainscales.brainscales2 as pynn
        print(pynn.REAL)
        """, tmp_path, extra_path=[real_pynn_brainscales], args=("-m", "hxemu.compat"))
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "True"
    assert "a real pynn_brainscales is installed; using it" in run.stderr


def test_unchanged_notebook_code_runs_on_the_server(server_address, tmp_path):
    """The tutorial's imports and experiment 2, unchanged, via the runner."""
    run = run_python(IMPORTS + """
        pynn.setup()
        pop = pynn.Population(1, pynn.cells.HXNeuron(
            leak_v_leak=1000, leak_i_bias=200, threshold_v_threshold=300,
            reset_v_reset=400, membrane_capacitance_capacitance=63,
            refractory_period_refractory_time=255, threshold_enable=True,
            reset_i_bias=1022, reset_enable_multiplication=True))
        pop.record(["v", "spikes"])
        stim = pynn.Population(1, SpikeSourceArray(spike_times=[0.01]))
        pynn.Projection(stim, pop, pynn.AllToAllConnector(),
                        synapse_type=StaticSynapse(weight=63))
        pynn.run(0.2)
        print(len(pop.get_data("spikes").segments[-1].spiketrains[0]) > 0,
              len(pop.get_data("v").segments[-1].irregularlysampledsignals))
        pynn.end()
        """, tmp_path, {"HXEMU_ADDRESS": server_address}, args=("-m", "hxemu.compat"))
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == "True 1"


def test_unchanged_calibrated_notebook_code_via_quiggeldy_variables(server_address,
                                                                    tmp_path):
    """Experiment 4's notebook code (nightly calibration as initial_config,
    calibrated HXNeuron, SpikeSourceArray inputs) with the imports of the
    notebook and quiggeldy's environment, as on EBRAINS."""
    host, port = server_address.rsplit(":", 1)
    run = run_python(IMPORTS + """
        import numpy as np
        from pynn_brainscales.brainscales2 import helper
        calib = helper.chip_from_nightly()
        pynn.setup(initial_config=calib)
        stimulated_p = pynn.Population(1, pynn.cells.HXNeuron())
        stimulated_p.record(["v", "spikes"])
        spiketimes = np.arange(6) * 0.05 + 0.01
        exc_stim_pop = pynn.Population(2, SpikeSourceArray(spike_times=spiketimes))
        pynn.Projection(exc_stim_pop, stimulated_p, pynn.AllToAllConnector(),
                        synapse_type=StaticSynapse(weight=31),
                        receptor_type="excitatory")
        pynn.run(0.6)
        mem_v = stimulated_p.get_data("v").segments[-1].irregularlysampledsignals[0]
        print(mem_v.name, str(mem_v.units.dimensionality), len(mem_v) > 1000)
        pynn.end()
        """, tmp_path, {"HXEMU_ADDRESS": "", "QUIGGELDY_ENABLED": "1",
                        "QUIGGELDY_IP": host, "QUIGGELDY_PORT": port,
                        "QUIGGELDY_USER_NO_MUNGE": "ebrains-user"},
        args=("-m", "hxemu.compat"))
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == "v dimensionless True"

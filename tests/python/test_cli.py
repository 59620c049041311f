"""The ``hxemu`` command-line tool (client/cpp/cli) against a real server.

The CLI runs as a subprocess against the session's hxemu server (see
conftest.py). Its result files must hold exactly what the Python client gets
for the same experiment file, chip and seed: the same spike ticks and MADC
codes, bit for bit. The CLI binary is ``HXEMU_CLI_BINARY`` if set, else the
one in the CI build tree (``build/client/cpp/hxemu``); without it the tests
are skipped.
"""

import csv
import io
import json
import os
import shutil
import socket
import subprocess
import uuid
from concurrent import futures
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import json_format, text_format

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "client" / "cpp" / "examples"
EXAMPLE_FILES = [
    "experiment1_silent_neuron.json",
    "experiment2_leak_over_threshold.textproto",
    "experiment4_external_stimulation.json",
]
TICK_MS = 8e-6

# The exit codes of client/cpp/README.md.
EXIT_OK, EXIT_OTHER, EXIT_USAGE, EXIT_REJECTED, EXIT_NOT_FOUND = 0, 1, 2, 3, 4
EXIT_JOB_NOT_SUCCEEDED, EXIT_UNREACHABLE, EXIT_TIMEOUT, EXIT_AUTH = 5, 6, 7, 8

COMMANDS = ["submit", "status", "watch", "cancel", "result", "jobs", "chips",
            "info", "calibration", "help"]


@pytest.fixture(scope="session")
def cli_binary():
    path = os.environ.get("HXEMU_CLI_BINARY") or str(
        REPO / "build" / "client" / "cpp" / "hxemu")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.skip(f"no hxemu CLI binary at {path} (set HXEMU_CLI_BINARY or "
                    "build the 'hxemu' target into build/)")
    return path


@pytest.fixture
def user():
    """A fresh user per test, so that 'jobs' lists only this test's jobs."""
    return f"cli-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def hxemu(cli_binary, user, server_address):
    """Runs the CLI against the session server as `user`."""
    def run(*args, env=None, address=server_address, check=None):
        environment = dict(os.environ)
        environment.pop("HXEMU_TOKEN", None)
        environment["HXEMU_ADDRESS"] = address
        environment.update(env or {})
        done = subprocess.run([cli_binary, *map(str, args), f"--user={user}"],
                              env=environment, capture_output=True, text=True,
                              timeout=120)
        if check is not None:
            assert done.returncode == check, (args, done.returncode, done.stderr)
        return done
    return run


@pytest.fixture
def client(server_address, user):
    from hxemu.client import Client
    return Client(server_address, user=user)


def read_experiment(path):
    from hxemu._proto import experiment_pb2
    experiment = experiment_pb2.Experiment()
    text = Path(path).read_text()
    if str(path).endswith(".json"):
        json_format.Parse(text, experiment)
    else:
        text_format.Parse(text, experiment)
    return experiment


def python_result(client, experiment):
    from hxemu.client import state_name
    job = client.wait(client.submit(experiment).job_id, timeout=120)
    assert state_name(job.state) == "SUCCEEDED", job
    return client.result(job.job_id)


def parse_calibration(text):
    from hxemu._proto import experiment_pb2
    return json_format.Parse(text, experiment_pb2.Calibration())


def parse_result_json(text):
    from hxemu._proto import experiment_pb2
    return json_format.Parse(text, experiment_pb2.Result())


UNKNOWN = 0xFFFFFFFF  # population / neuron of CADC rows in npy


def rows_of(result):
    """(kind, population, neuron, circuit, observable, ticks, value) of every
    spike, MADC sample and CADC code, in the CLI's csv/npy row order (value -1
    for spikes)."""
    observables = {1: "spikes", 2: "v", 3: "exc_synin", 4: "inh_synin",
                   5: "adaptation"}
    rows = []
    for train in result.spike_trains:
        rows += [("spike", train.population, train.neuron, train.circuit, "spikes",
                  t, -1) for t in train.times_ticks]
    for trace in result.traces:
        rows += [("trace", trace.population, trace.neuron, trace.circuit,
                  observables[trace.observable], t, c)
                 for t, c in zip(trace.times_ticks, trace.codes)]
    for read in result.cadc_reads:
        rows += [("cadc", UNKNOWN, UNKNOWN, circuit, "v", read.time_ticks, c)
                 for circuit, c in zip(result.cadc_circuits, read.codes)]
    return rows


def submit_wait(hxemu, example, tmp_path, *extra):
    out = tmp_path / "result.json"
    done = hxemu("submit", EXAMPLES / example, "--wait", "--out", out,
                 "--chip=0", *extra, check=EXIT_OK)
    job_id = done.stdout.strip()
    assert len(job_id) >= 16 and "\n" not in job_id, done.stdout
    return job_id, parse_result_json(out.read_text())


# --- results: bit-identical to the Python client ----------------------------


@pytest.mark.parametrize("example", EXAMPLE_FILES)
def test_submit_wait_out_matches_python_client(hxemu, client, tmp_path, example):
    _, cli = submit_wait(hxemu, example, tmp_path)
    experiment = read_experiment(EXAMPLES / example)
    experiment.chip_id = 0
    python = python_result(client, experiment)
    # the membrane trace is there and long (0.2 ms at ~34 ns per sample)
    assert len(python.traces) == 1 and len(python.traces[0].codes) > 4000
    assert [t.times_ticks for t in cli.traces] == [t.times_ticks for t in python.traces]
    assert [t.codes for t in cli.traces] == [t.codes for t in python.traces]
    assert [s.times_ticks for s in cli.spike_trains] == [
        s.times_ticks for s in python.spike_trains]
    assert cli == python  # every field, bit for bit
    if example.startswith("experiment2"):
        assert len(python.spike_trains[0].times_ticks) >= 3  # leak over threshold


def test_calibrated_experiment_matches_python_client(hxemu, client, tmp_path):
    """The tutorial's experiment 4 on a calibrated neuron: --calibrated, and
    a calibration stored by 'hxemu calibration --out' for --initial_config,
    give what the Python client gets with client.calibration()."""
    example = "experiment4_external_stimulation_calibrated.json"
    _, calibrated = submit_wait(hxemu, example, tmp_path, "--calibrated")
    stored = tmp_path / "calibration.json"
    summary = hxemu("calibration", "--chip=0", "--out", stored, check=EXIT_OK)
    assert "chip:      0" in summary.stdout and "circuits:  512" in summary.stdout
    _, from_file = submit_wait(hxemu, example, tmp_path, f"--initial_config={stored}")
    experiment = read_experiment(EXAMPLES / example)
    experiment.chip_id = 0
    calibration = client.calibration(chip_id=0)
    assert parse_calibration(stored.read_text()) == calibration
    experiment.initial_config.CopyFrom(calibration)
    python = python_result(client, experiment)
    assert calibrated == python and from_file == python
    # the calibration made a difference: the raw-parameter version differs
    _, raw = submit_wait(hxemu, "experiment4_external_stimulation.json", tmp_path)
    assert raw.traces[0].codes != python.traces[0].codes
    hxemu("submit", EXAMPLES / example, "--calibrated", f"--initial_config={stored}",
          check=EXIT_USAGE)


def test_seed_changes_the_result(hxemu, tmp_path):
    """The comparison above can fail: another seed gives another trace."""
    example = "experiment1_silent_neuron.json"
    _, first = submit_wait(hxemu, example, tmp_path)
    _, again = submit_wait(hxemu, example, tmp_path)
    _, other = submit_wait(hxemu, example, tmp_path, "--seed=777")
    assert first == again
    assert first.traces[0].codes != other.traces[0].codes


@pytest.mark.parametrize("cadc", [False, True])
def test_csv_and_npy_hold_the_same_samples(hxemu, client, tmp_path, cadc):
    path = EXAMPLES / "experiment2_leak_over_threshold.textproto"
    if cadc:  # also CADC reads of the membrane
        experiment = read_experiment(path)
        experiment.cadc.times_ms.extend([0.01, 0.05, 0.1])
        path = tmp_path / "with_cadc.textproto"
        path.write_text(text_format.MessageToString(experiment))
    job_id, _ = submit_wait(hxemu, path, tmp_path)
    expected = rows_of(client.result(job_id))
    assert any(row[0] == "spike" for row in expected)

    done = hxemu("result", job_id, "--format=csv", check=EXIT_OK)
    table = list(csv.DictReader(io.StringIO(done.stdout)))
    assert [(r["kind"], int(r["population"] or UNKNOWN), int(r["neuron"] or UNKNOWN),
             int(r["circuit"]), r["observable"], int(r["time_ticks"]),
             int(r["value"]) if r["value"] else -1) for r in table] == expected
    for r in table:
        assert float(r["time_ms"]) == pytest.approx(int(r["time_ticks"]) * TICK_MS,
                                                    abs=1e-6)

    npy = tmp_path / "result.npy"
    hxemu("result", job_id, "--out", npy, check=EXIT_OK)  # format from the name
    array = np.load(npy)
    assert array.shape == (len(expected),)
    assert [(k.decode(), int(p), int(n), int(c), o.decode(), int(t), int(v))
            for k, p, n, c, o, t, v in zip(
                array["kind"], array["population"], array["neuron"],
                array["circuit"], array["observable"], array["time_ticks"],
                array["value"])] == expected
    assert np.array_equal(array["time_ms"], array["time_ticks"] * TICK_MS)

    done = hxemu("result", job_id, "--format=json", check=EXIT_OK)
    assert parse_result_json(done.stdout) == client.result(job_id)


# --- job commands -------------------------------------------------------------


def test_status_watch_jobs_of_a_python_submitted_job(hxemu, client):
    """The CLI and the Python client see the same jobs (same user)."""
    experiment = read_experiment(EXAMPLES / "experiment1_silent_neuron.json")
    job_id = client.submit(experiment).job_id
    client.wait(job_id, timeout=120)

    watched = hxemu("watch", job_id, check=EXIT_OK)  # not a terminal: lines
    lines = watched.stdout.strip().splitlines()
    assert lines and lines[-1].startswith("SUCCEEDED 0.200/0.200 ms")

    status = hxemu("status", job_id, check=EXIT_OK)
    assert f"job:      {job_id}" in status.stdout
    assert "state:    SUCCEEDED" in status.stdout
    as_json = json.loads(hxemu("status", job_id, "--json", check=EXIT_OK).stdout)
    assert as_json["job_id"] == job_id and as_json["state"] == "JOB_STATE_SUCCEEDED"

    listed = json.loads(hxemu("jobs", "--json", check=EXIT_OK).stdout)
    assert [job["job_id"] for job in listed["jobs"]] == [job_id]
    table = hxemu("jobs", check=EXIT_OK).stdout.splitlines()
    assert table[0].split()[:3] == ["JOB", "STATE", "CHIP"]
    assert table[1].split()[:2] == [job_id, "SUCCEEDED"]


def _on_terminal(argv, env, stream):
    """Runs argv with `stream` ("stdout" or "stderr") on a pseudo-terminal;
    returns (exit code, what it wrote there)."""
    import pty
    try:
        master, slave = pty.openpty()
    except OSError as err:  # e.g. a container without /dev/pts
        pytest.skip(f"no pseudo-terminal: {err}")
    other = subprocess.PIPE
    process = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL,
                               stdout=slave if stream == "stdout" else other,
                               stderr=slave if stream == "stderr" else other)
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    process.communicate(timeout=120)
    return process.returncode, b"".join(chunks).decode()


def test_progress_bar_on_a_terminal(cli_binary, server_address, user, client):
    env = dict(os.environ, HXEMU_ADDRESS=server_address)
    example = str(EXAMPLES / "experiment1_silent_neuron.json")
    code, bar = _on_terminal([cli_binary, "submit", example, "--wait",
                              f"--user={user}"], env, "stderr")
    assert code == EXIT_OK
    assert "\r" in bar and "SUCCEEDED [" + "#" * 30 + "] 100.0% 0.200/0.200 ms" in bar
    job_id = client.list_jobs(limit=1)[0].job_id
    code, bar = _on_terminal([cli_binary, "watch", job_id, f"--user={user}"],
                             env, "stdout")
    assert code == EXIT_OK
    assert bar.startswith("\rSUCCEEDED [" + "#" * 30 + "] 100.0%"), bar


def test_cancel(hxemu, client):
    """Cancel a job queued behind a long one (about 2 s of emulation, itself
    cancelled at the end): it ends CANCELLED - unless it already ran, then
    'result' must work instead; either way the exit codes follow its state."""
    from hxemu.client import state_name
    blocker = read_experiment(EXAMPLES / "experiment1_silent_neuron.json")
    blocker.runtime_ms = 2000.0
    del blocker.recordings[0]  # spikes only: no 2 s MADC trace
    blocker.chip_id = 0
    blocker_id = client.submit(blocker).job_id
    job_id = hxemu("submit", EXAMPLES / "experiment1_silent_neuron.json",
                   "--chip=0", check=EXIT_OK).stdout.strip()
    cancelled = hxemu("cancel", job_id, check=EXIT_OK)
    assert cancelled.stdout.split()[0] == job_id
    state = cancelled.stdout.split()[-1]
    assert state in ("CANCELLED", "SUCCEEDED")
    assert state_name(client.wait(job_id, timeout=120).state) == state
    if state == "CANCELLED":
        failed = hxemu("result", job_id, check=EXIT_REJECTED)
        assert "FAILED_PRECONDITION" in failed.stderr
        watched = hxemu("watch", job_id, check=EXIT_JOB_NOT_SUCCEEDED)
        assert "ended CANCELLED" in watched.stderr
        status = hxemu("status", job_id, check=EXIT_OK)
        assert "state:    CANCELLED" in status.stdout
    else:
        hxemu("result", job_id, check=EXIT_OK)
    # cancelling a running job: it ends CANCELLED (or had just succeeded)
    hxemu("cancel", blocker_id, check=EXIT_OK)
    assert state_name(client.wait(blocker_id, timeout=120).state) in (
        "CANCELLED", "SUCCEEDED")
    # cancelling an ended job changes nothing
    again = hxemu("cancel", job_id, check=EXIT_OK)
    assert again.stdout.split() == [job_id, state]


def test_chips_and_info(hxemu, client):
    info = client.server_info()
    chips = json.loads(hxemu("chips", "--json", check=EXIT_OK).stdout)
    assert [c["chip_id"] for c in chips["chips"]] == list(range(info.num_chips))
    text = hxemu("info", check=EXIT_OK).stdout
    assert f"chips:          {info.num_chips}" in text
    assert "leak_v_leak" in text
    as_json = json.loads(hxemu("info", "--json", check=EXIT_OK).stdout)
    names = [p["name"] for p in as_json["neuron_parameters"]]
    assert names == [p.name for p in info.neuron_parameters]


# --- error exit codes ----------------------------------------------------------


def test_bad_experiment_files_exit_2(hxemu, tmp_path):
    missing = hxemu("submit", tmp_path / "nope.json", check=EXIT_USAGE)
    assert "cannot read" in missing.stderr

    broken = tmp_path / "broken.json"
    broken.write_text('{"populations": [')
    assert "not a valid JSON" in hxemu("submit", broken, check=EXIT_USAGE).stderr

    unknown_field = tmp_path / "unknown.json"
    unknown_field.write_text('{"runtime_ms": 0.1, "bogus": 1}')
    assert "bogus" in hxemu("submit", unknown_field, check=EXIT_USAGE).stderr

    text = tmp_path / "bad.textproto"
    text.write_text('runtime_ms: 0.1\npopulations { size: 1 bogus: 3 }\n')
    done = hxemu("submit", text, check=EXIT_USAGE)
    assert f"{text}:2:" in done.stderr and "bogus" in done.stderr
    # nothing was submitted
    assert json.loads(hxemu("jobs", "--json", check=EXIT_OK).stdout)["jobs"] == []


def test_rejected_experiments_exit_3_naming_the_field(hxemu, tmp_path):
    experiment = read_experiment(EXAMPLES / "experiment1_silent_neuron.json")
    experiment.populations[0].parameters[0].values[0] = 5000
    path = tmp_path / "out_of_range.json"
    path.write_text(json_format.MessageToJson(experiment))
    done = hxemu("submit", path, check=EXIT_REJECTED)
    assert "INVALID_ARGUMENT" in done.stderr
    assert "populations[0].parameters[leak_v_leak].values[0]" in done.stderr

    experiment.populations[0].parameters[0].values[0] = 700
    experiment.populations[0].size = 0
    path.write_text(json_format.MessageToJson(experiment))
    done = hxemu("submit", path, check=EXIT_REJECTED)
    assert "populations[0].size" in done.stderr


@pytest.mark.parametrize("command", ["status", "watch", "cancel", "result"])
def test_unknown_job_exits_4(hxemu, command):
    done = hxemu(command, "0123456789abcdef0123456789abcdef", check=EXIT_NOT_FOUND)
    assert "NOT_FOUND" in done.stderr


def test_usage_errors_exit_2(hxemu, tmp_path):
    assert "unknown command" in hxemu("frobnicate", check=EXIT_USAGE).stderr
    assert "unknown flag" in hxemu("jobs", "--frobnicate", check=EXIT_USAGE).stderr
    assert "does not apply" in hxemu("jobs", "--wait", check=EXIT_USAGE).stderr
    assert "takes 1 argument" in hxemu("status", check=EXIT_USAGE).stderr
    assert "unknown --format" in hxemu("result", "x", "--format=xml",
                                       check=EXIT_USAGE).stderr
    hxemu("watch", "x", "--timeout=soon", check=EXIT_USAGE)
    example = EXAMPLES / "experiment1_silent_neuron.json"
    assert "--out needs --wait" in hxemu("submit", example, "--out=r.json",
                                         check=EXIT_USAGE).stderr
    assert json.loads(hxemu("jobs", "--json", check=EXIT_OK).stdout)["jobs"] == []


def test_timeout_exits_7(hxemu, client):
    # A job of seconds (2 s hardware, spikes only) outlives the 50 ms --timeout
    # of the watch: the server pushes its first state at once, so a job that
    # ended within the deadline would race it.
    experiment = read_experiment(EXAMPLES / "experiment1_silent_neuron.json")
    experiment.runtime_ms = 2000.0
    del experiment.recordings[0]
    job_id = client.submit(experiment).job_id
    done = hxemu("watch", job_id, "--timeout=50ms", check=EXIT_TIMEOUT)
    assert "DEADLINE_EXCEEDED" in done.stderr
    client.cancel(job_id)
    client.wait(job_id, timeout=120)


def _closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_address_from_flag_and_environment(hxemu, server_address):
    dead = f"127.0.0.1:{_closed_port()}"
    done = hxemu("chips", address=dead, check=EXIT_UNREACHABLE)
    assert dead in done.stderr
    # the flag wins over HXEMU_ADDRESS
    hxemu("chips", f"--address={server_address}", address=dead, check=EXIT_OK)
    hxemu("chips", f"--address={dead}", check=EXIT_UNREACHABLE)


# --- TLS and token ----------------------------------------------------------------


@pytest.fixture
def tls_recorder(tmp_path):
    """A TLS gRPC server (self-signed certificate for localhost/127.0.0.1,
    made now) whose GetServerInfo answers and records the call's metadata."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("no openssl binary to make a test certificate")
    import grpc
    from hxemu._proto import service_pb2, service_pb2_grpc
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert),
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    seen = []

    class Recorder(service_pb2_grpc.ExperimentServiceServicer):
        def GetServerInfo(self, request, context):
            seen.append(dict(context.invocation_metadata()))
            if seen[-1].get("authorization") == "Bearer bad":
                context.abort(grpc.StatusCode.UNAUTHENTICATED, "token rejected")
            return service_pb2.ServerInfo(version="tls-recorder", num_chips=1)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    service_pb2_grpc.add_ExperimentServiceServicer_to_server(Recorder(), server)
    port = server.add_secure_port("127.0.0.1:0", grpc.ssl_server_credentials(
        [(key.read_bytes(), cert.read_bytes())]))
    server.start()
    try:
        yield f"127.0.0.1:{port}", cert, seen
    finally:
        # Wait until gRPC's own threads are done: a later test forks (starts a
        # server binary), and a fork while they shut down can abort Python.
        server.stop(0).wait()


def test_tls_with_token(cli_binary, tls_recorder, tmp_path):
    address, cert, seen = tls_recorder

    def run(*args, token="t0k3n"):
        env = {k: v for k, v in os.environ.items()
               if k not in ("HXEMU_TOKEN", "QUIGGELDY_TOKEN")}
        env.update(HXEMU_ADDRESS=address, HXEMU_TOKEN=token)
        return subprocess.run([cli_binary, "info", "--user=tls-user", *args],
                              env=env, capture_output=True, text=True, timeout=60)

    done = run(f"--tls_ca={cert}")
    assert done.returncode == EXIT_OK, done.stderr
    assert "version:        tls-recorder" in done.stdout
    assert seen[-1]["authorization"] == "Bearer t0k3n"
    assert seen[-1]["hxemu-user"] == "tls-user"
    # the flag wins over HXEMU_TOKEN
    assert run(f"--tls_ca={cert}", "--token=other").returncode == EXIT_OK
    assert seen[-1]["authorization"] == "Bearer other"
    rejected = run(f"--tls_ca={cert}", token="bad")
    assert rejected.returncode == EXIT_AUTH
    assert "UNAUTHENTICATED: token rejected" in rejected.stderr
    calls = len(seen)
    # the certificate is checked: its name, and that it is trusted at all
    assert run(f"--tls_ca={cert}", "--tls_server_name=localhost").returncode == EXIT_OK
    assert run(f"--tls_ca={cert}", "--tls_server_name=elsewhere.example"
               ).returncode == EXIT_UNREACHABLE
    assert run().returncode == EXIT_UNREACHABLE          # plaintext to a TLS port
    assert run("--tls").returncode == EXIT_UNREACHABLE   # system roots: untrusted
    assert len(seen) == calls + 1
    missing = run(f"--tls_ca={tmp_path / 'nope.pem'}")
    assert missing.returncode == EXIT_USAGE and "cannot read" in missing.stderr
    half = run(f"--tls_ca={cert}", f"--tls_cert={cert}")
    assert half.returncode == EXIT_USAGE and "--tls_key" in half.stderr


def test_token_against_a_server_that_requires_one(cli_binary, tmp_path):
    from hxemu._server import EmbeddedServer, ServerStartError, find_server_binary
    try:
        find_server_binary()
    except ServerStartError as err:
        pytest.skip(str(err))
    tokens = tmp_path / "tokens"
    tokens.write_text("tok-alice-0123456789abcdef alice\n")
    with EmbeddedServer(extra_args=[f"--auth_token_file={tokens}"]) as server:
        def run(*args, token=None):
            env = {k: v for k, v in os.environ.items()
                   if k not in ("HXEMU_TOKEN", "QUIGGELDY_TOKEN")}
            env["HXEMU_ADDRESS"] = server.address
            if token:
                env["HXEMU_TOKEN"] = token
            return subprocess.run([cli_binary, *map(str, args)], env=env,
                                  capture_output=True, text=True, timeout=120)
        missing = run("jobs")
        assert missing.returncode == EXIT_AUTH, missing.stderr
        assert "UNAUTHENTICATED" in missing.stderr
        assert run("jobs", token="tok-wrong-0123456789abcdef").returncode == EXIT_AUTH
        example = EXAMPLES / "experiment1_silent_neuron.json"
        done = run("submit", example, "--wait", token="tok-alice-0123456789abcdef")
        assert done.returncode == EXIT_OK, done.stderr
        job_id = done.stdout.strip()
        listed = run("jobs", "--json", "--token=tok-alice-0123456789abcdef")
        assert listed.returncode == EXIT_OK, listed.stderr
        assert [j["job_id"] for j in json.loads(listed.stdout)["jobs"]] == [job_id]


# --- help -----------------------------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_has_help(cli_binary, command):
    for args in ([command, "--help"], ["help", command]):
        done = subprocess.run([cli_binary, *args], capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == EXIT_OK, done.stderr
        assert done.stdout.startswith(f"Usage: hxemu {command}"), done.stdout


def test_top_level_help_lists_commands_and_exit_codes(cli_binary):
    done = subprocess.run([cli_binary, "--help"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == EXIT_OK
    for command in COMMANDS:
        assert f"  {command}" in done.stdout
    assert "Exit codes:" in done.stdout and "HXEMU_TOKEN" in done.stdout
    bare = subprocess.run([cli_binary], capture_output=True, text=True, timeout=60)
    assert bare.returncode == EXIT_USAGE and "Usage: hxemu" in bare.stderr

"""The hxemu-server binary as an operator sees it: health service, metrics
endpoint, parameter table dump and graceful shutdown on SIGTERM."""

import json
import re
import signal
import subprocess
import time
import urllib.request

import grpc
import pytest

from hxemu._server import EmbeddedServer, ServerStartError, find_server_binary
from hxemu.client import Client


@pytest.fixture
def binary():
    try:
        return find_server_binary()
    except ServerStartError as err:
        pytest.skip(f"no hxemu server: {err}")


def _metrics_port(server):
    # The server reports the bound port of "--metrics_listen=127.0.0.1:0" on
    # stderr, right after it is listening; the wait is generous for a busy
    # machine and ends as soon as the line is there.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        match = re.search(r"metrics on port (\d+)", server.stderr_tail())
        if match:
            return int(match.group(1))
        time.sleep(0.05)
    raise AssertionError("server did not report its metrics port: "
                         + server.stderr_tail())


def test_health_service_reports_serving(binary):
    with EmbeddedServer(binary) as server:
        with grpc.insecure_channel(server.address) as channel:
            check = channel.unary_unary("/grpc.health.v1.Health/Check")
            # HealthCheckRequest{service=""} is empty on the wire; the answer
            # HealthCheckResponse{status=SERVING(1)} is field 1 varint 1.
            assert check(b"", timeout=10) == b"\x08\x01"


def test_metrics_endpoint_counts_jobs(binary):
    with EmbeddedServer(binary, extra_args=["--metrics_listen=127.0.0.1:0"]) as server:
        port = _metrics_port(server)
        with Client(server.address) as client:
            assert client.server_info().num_chips == 1
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                    timeout=10) as response:
            text = response.read().decode()
        assert 'hxemu_jobs_submitted_total{outcome="accepted"} 0' in text
        assert "hxemu_job_wait_seconds_bucket" in text


def test_parameter_table_dump_matches_server_info(binary):
    dumped = json.loads(subprocess.run(
        [binary, "--print_parameter_table"], check=True, capture_output=True,
        text=True, timeout=30).stdout)
    with EmbeddedServer(binary) as server:
        served = Client(server.address).server_info().neuron_parameters
    assert [p["name"] for p in dumped] == [p.name for p in served]
    leak = next(p for p in dumped if p["name"] == "leak_v_leak")
    assert (leak["min"], leak["max"], leak["kind"]) == (0, 1022, "voltage_dac")


def test_sigterm_shuts_down_cleanly(binary):
    server = EmbeddedServer(binary)
    server.start()
    process = server._process
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    assert "stopped" in server.stderr_tail()
    server.stop()


def test_bad_flag_value_fails_with_a_message(binary):
    run = subprocess.run([binary, "--listen=127.0.0.1:0", "--num_chips=-3"],
                         capture_output=True, text=True, timeout=30)
    assert run.returncode != 0
    assert "num_chips" in run.stderr

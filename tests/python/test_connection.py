"""Where the client connects and how it authenticates: HXEMU_ADDRESS, the
quiggeldy variables as aliases, HXEMU_TOKEN / QUIGGELDY_TOKEN as a bearer
token, the embedded server when nothing is set; ListJobs / ListChips."""

import pytest

import hxemu
import hxemu.pynn as pynn_module
from hxemu.client import configured_address

_VARIABLES = ("HXEMU_ADDRESS", "QUIGGELDY_ENABLED", "QUIGGELDY_IP", "QUIGGELDY_PORT",
              "HXEMU_TOKEN", "QUIGGELDY_TOKEN")


@pytest.fixture
def clean_env(monkeypatch):
    for name in _VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_nothing_set_means_embedded_server(clean_env):
    assert configured_address() is None


def test_hxemu_address_wins_over_quiggeldy(clean_env):
    clean_env.setenv("HXEMU_ADDRESS", "10.0.0.1:50051")
    clean_env.setenv("QUIGGELDY_ENABLED", "1")
    clean_env.setenv("QUIGGELDY_IP", "10.0.0.2")
    clean_env.setenv("QUIGGELDY_PORT", "7443")
    assert configured_address() == "10.0.0.1:50051"


@pytest.mark.parametrize("ip, expected", [("10.0.0.2", "10.0.0.2:7443"),
                                          ("::1", "[::1]:7443")])
def test_quiggeldy_variables_are_aliases(clean_env, ip, expected):
    clean_env.setenv("QUIGGELDY_ENABLED", "1")
    clean_env.setenv("QUIGGELDY_IP", ip)
    clean_env.setenv("QUIGGELDY_PORT", "7443")
    assert configured_address() == expected


def test_quiggeldy_disabled_is_ignored(clean_env):
    clean_env.setenv("QUIGGELDY_ENABLED", "0")
    clean_env.setenv("QUIGGELDY_IP", "10.0.0.2")
    assert configured_address() is None


@pytest.mark.parametrize("missing", ["QUIGGELDY_IP", "QUIGGELDY_PORT"])
def test_quiggeldy_enabled_needs_ip_and_port(clean_env, missing):
    clean_env.setenv("QUIGGELDY_ENABLED", "1")
    clean_env.setenv("QUIGGELDY_IP", "10.0.0.2")
    clean_env.setenv("QUIGGELDY_PORT", "7443")
    clean_env.delenv(missing)
    with pytest.raises(ValueError, match=f"{missing} is not set"):
        configured_address()


def test_quiggeldy_port_must_be_a_port(clean_env):
    clean_env.setenv("QUIGGELDY_ENABLED", "1")
    clean_env.setenv("QUIGGELDY_IP", "10.0.0.2")
    clean_env.setenv("QUIGGELDY_PORT", "70000")
    with pytest.raises(ValueError, match=r"QUIGGELDY_PORT='70000'.*\[1, 65535\]"):
        configured_address()


def test_pynn_runs_through_quiggeldy_variables(clean_env, fake_server):
    host, port = fake_server.address.rsplit(":", 1)
    clean_env.setenv("QUIGGELDY_ENABLED", "1")
    clean_env.setenv("QUIGGELDY_IP", host)
    clean_env.setenv("QUIGGELDY_PORT", port)
    pynn = pynn_module
    pynn.setup()
    try:
        pop = pynn.Population(1, pynn.cells.HXNeuron(leak_v_leak=700))
        pop.record("v")
        pynn.run(0.02)
        assert len(pop.get_data("v").segments[0].irregularlysampledsignals) == 1
        assert pynn.simulator.state.client().address == fake_server.address
    finally:
        pynn.end()


@pytest.mark.parametrize("variable", ["HXEMU_TOKEN", "QUIGGELDY_TOKEN"])
def test_token_is_sent_as_bearer(clean_env, fake_server, variable):
    clean_env.setenv(variable, "s3cret")
    with hxemu.Client(fake_server.address) as client:
        client.server_info()
    assert fake_server.service.authorizations[-1] == "Bearer s3cret"


def test_hxemu_token_wins_and_explicit_token_wins_over_both(clean_env, fake_server):
    clean_env.setenv("HXEMU_TOKEN", "mine")
    clean_env.setenv("QUIGGELDY_TOKEN", "theirs")
    with hxemu.Client(fake_server.address) as client:
        client.server_info()
    with hxemu.Client(fake_server.address, token="explicit") as client:
        client.server_info()
    assert fake_server.service.authorizations[-2:] == ["Bearer mine", "Bearer explicit"]


def test_no_token_no_authorization(clean_env, fake_server):
    with hxemu.Client(fake_server.address) as client:
        client.server_info()
    assert fake_server.service.authorizations[-1] is None


def test_unreachable_server_from_pynn_is_a_connection_error(clean_env):
    clean_env.setenv("HXEMU_ADDRESS", "127.0.0.1:1")
    pynn = pynn_module
    pynn.setup()
    try:
        pop = pynn.Population(1, pynn.cells.HXNeuron())
        pop.record("spikes")
        with pytest.raises(ConnectionError, match="cannot reach the hxemu server at "
                                                  "127.0.0.1:1"):
            pynn.run(0.01)
    finally:
        pynn.end()


def test_list_jobs_and_chips(server_address):
    with hxemu.Client(server_address, user="lister") as client:
        chips = client.chips()
        assert chips and all(c.chip_id == i for i, c in enumerate(chips))
        experiment = hxemu.v1.experiment_pb2.Experiment(runtime_ms=0.01, seed=1)
        experiment.populations.add(size=1, cell_type=1)
        ids = [client.submit(experiment).job_id for _ in range(3)]
        for job_id in ids:
            client.wait(job_id, timeout=30)
        jobs = client.list_jobs(page_size=2)
        assert [j.job_id for j in jobs[:3]] == ids[::-1]  # newest first
        assert all(j.user == "lister" for j in jobs)
        assert [j.job_id for j in client.list_jobs(limit=1)] == ids[-1:]


def test_token_authentication_on_the_server(clean_env, tmp_path):
    """A server with --auth_token_file: no token -> PermissionDeniedError
    naming the metadata; HXEMU_TOKEN -> the token's user runs the job."""
    from hxemu._server import EmbeddedServer, ServerStartError, find_server_binary
    try:
        binary = find_server_binary()
    except ServerStartError as err:
        pytest.skip(str(err))
    tokens = tmp_path / "tokens"
    tokens.write_text("0123456789abcdef-alice alice\n")
    with EmbeddedServer(binary, extra_args=[f"--auth_token_file={tokens}",
                                            "--calibrate_at_start=false"]) as server:
        clean_env.setenv("HXEMU_ADDRESS", server.address)
        pynn = pynn_module
        for token, outcome in ((None, "refused"), ("wrong-token-123456", "refused"),
                               ("0123456789abcdef-alice", "alice")):
            if token:
                clean_env.setenv("HXEMU_TOKEN", token)
            pynn.setup()
            try:
                pop = pynn.Population(1, pynn.cells.HXNeuron())
                pop.record("spikes")
                if outcome == "refused":
                    with pytest.raises(hxemu.PermissionDeniedError,
                                       match="metadata authorization"):
                        pynn.run(0.01)
                else:
                    pynn.run(0.01)
                    assert pynn.simulator.state.last_job.user == outcome
            finally:
                pynn.end()

"""Shared fixtures of the Python client tests.

Tests marked ``server`` run against ONE real hxemu server per session: the
one in ``HXEMU_ADDRESS`` if set, else a ``hxemu-server`` started through the
client's embedded launcher (free loopback port, stopped at the end of the
session). Without a server binary these tests are skipped (with the reason).
Other tests need no server (some use the in-process fake in fake_server.py).
"""

import os
import sys
import warnings
from pathlib import Path

import pytest

# The tests start server binaries (fork + exec) while in-process gRPC servers
# and channels have threads running; gRPC's fork handlers are for children
# that go on using gRPC, which ours never do, and they can abort a fork made
# while gRPC threads are busy. Set before grpc is first imported.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")

warnings.filterwarnings("ignore", message="mpi4py not available")

_CLIENT = Path(__file__).resolve().parents[2] / "client" / "python"
if str(_CLIENT) not in sys.path:
    sys.path.insert(0, str(_CLIENT))

TESTS_DIR = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def server_address():
    """host:port of the real server for this session; HXEMU_ADDRESS is set to
    it while the session runs, so plain ``pynn.setup()`` uses it too."""
    address = os.environ.get("HXEMU_ADDRESS")
    if address:
        yield address
        return
    from hxemu._server import EmbeddedServer, ServerStartError, find_server_binary
    try:
        find_server_binary()
    except ServerStartError as err:
        pytest.skip(f"no hxemu server: {err}")
    server = EmbeddedServer()
    server.start()
    os.environ["HXEMU_ADDRESS"] = server.address
    try:
        yield server.address
    finally:
        os.environ.pop("HXEMU_ADDRESS", None)
        server.stop()


@pytest.fixture
def pynn(server_address):
    """hxemu.pynn, set up against the session server; end() afterwards."""
    import hxemu.pynn as pynn_module
    yield pynn_module
    pynn_module.end()


@pytest.fixture
def fake_server():
    from fake_server import FakeServer
    with FakeServer() as fake:
        yield fake


@pytest.fixture
def fake_pynn(fake_server, monkeypatch):
    """hxemu.pynn talking to the in-process fake server."""
    import hxemu.pynn as pynn_module
    monkeypatch.setenv("HXEMU_ADDRESS", fake_server.address)
    yield pynn_module
    pynn_module.end()


@pytest.fixture(params=["fake", "server"])
def any_pynn(request, monkeypatch):
    """hxemu.pynn against the fake and against the real server."""
    import hxemu.pynn as pynn_module
    if request.param == "fake":
        fake = request.getfixturevalue("fake_server")
        monkeypatch.setenv("HXEMU_ADDRESS", fake.address)
    else:
        request.getfixturevalue("server_address")
    yield pynn_module
    pynn_module.end()


@pytest.fixture
def offline_pynn():
    """hxemu.pynn set up without any server: anything submitted would fail."""
    import hxemu.pynn as pynn_module
    pynn_module.setup(connection="127.0.0.1:1")
    yield pynn_module
    pynn_module.end()


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "server_address" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.server)

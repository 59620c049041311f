"""The embedded-server launcher, with stand-in binaries (no real server needed)."""

import os
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from hxemu._server import EmbeddedServer, ServerStartError, find_server_binary


def _script(tmp_path, name, body):
    path = tmp_path / name
    path.write_text(f"#!{sys.executable}\n" + textwrap.dedent(body))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


GOOD = """
    import signal, sys, time
    args = sys.argv[1:]
    assert "--listen=127.0.0.1:0" in args and "--num_chips=1" in args, args
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    print("some log line first")
    print("hxemu-server listening on 127.0.0.1:45678", flush=True)
    while True:
        time.sleep(0.1)
"""


def test_reads_address_and_stops(tmp_path):
    server = EmbeddedServer(binary=_script(tmp_path, "good", GOOD))
    assert server.start() == "127.0.0.1:45678"
    assert server.running()
    pid = server.pid
    assert server.stop() == 0
    assert not server.running()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_failure_names_binary_and_stderr(tmp_path):
    binary = _script(tmp_path, "broken", """
        import sys
        sys.stderr.write("error: --num_chips must be positive\\n")
        sys.exit(3)
    """)
    with pytest.raises(ServerStartError) as info:
        EmbeddedServer(binary=binary).start()
    message = str(info.value)
    assert binary in message and "status 3" in message
    assert "--num_chips must be positive" in message


def test_startup_timeout(tmp_path):
    binary = _script(tmp_path, "silent", """
        import sys, time
        sys.stderr.write("still loading\\n"); sys.stderr.flush()
        time.sleep(60)
    """)
    server = EmbeddedServer(binary=binary, startup_timeout=1, stop_timeout=2)
    with pytest.raises(ServerStartError, match="within 1 s") as info:
        server.start()
    assert "still loading" in str(info.value)
    assert not server.running()


def test_sigterm_ignored_then_killed(tmp_path):
    binary = _script(tmp_path, "stubborn", """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("hxemu-server listening on 127.0.0.1:1234", flush=True)
        while True:
            time.sleep(0.1)
    """)
    server = EmbeddedServer(binary=binary, stop_timeout=0.5)
    server.start()
    with pytest.warns(RuntimeWarning, match="ignored SIGTERM"):
        status = server.stop()
    assert status == -9


def test_binary_lookup(tmp_path, monkeypatch):
    monkeypatch.setenv("HXEMU_SERVER_BINARY", str(tmp_path / "missing"))
    with pytest.raises(ServerStartError, match="not an executable"):
        find_server_binary()
    good = _script(tmp_path, "hxemu-server", GOOD)
    monkeypatch.setenv("HXEMU_SERVER_BINARY", good)
    assert find_server_binary() == good


def test_parameter_table_from_binary(tmp_path):
    """Without the generated JSON the table is asked from the server binary."""
    from hxemu import _parameters
    binary = _script(tmp_path, "table", """
        import json, sys
        assert sys.argv[1:] == ["--print_parameter_table"]
        print(json.dumps([{"name": "leak_v_leak", "kind": "voltage_dac", "min": 0,
                           "max": 1022, "default": 0, "unit": "V", "description": "x"}]))
    """)
    table = _parameters._from_binary(binary)
    assert list(table) == ["leak_v_leak"]
    assert (table["leak_v_leak"].min, table["leak_v_leak"].max) == (0, 1022)


def _exited(pid):
    """The process is gone or a zombie (its parent died before reaping it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_server_dies_with_its_launcher(tmp_path):
    # A launcher killed outright (no atexit, no stop()) must not leave its
    # server running: Linux sends the server SIGTERM when the launcher dies.
    pid_file = tmp_path / "server.pid"
    binary = _script(tmp_path, "records_pid", f"""
        import os, time
        with open({str(pid_file)!r}, "w") as f:
            f.write(str(os.getpid()))
        print("hxemu-server listening on 127.0.0.1:1234", flush=True)
        while True:
            time.sleep(0.1)
    """)
    client = str(Path(__file__).resolve().parents[2] / "client" / "python")
    launcher = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {client!r})
        from hxemu._server import EmbeddedServer
        EmbeddedServer(binary={binary!r}).start()
        print("started", flush=True)
        time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert launcher.stdout.readline().strip() == "started"
        pid = int(pid_file.read_text())
        assert not _exited(pid)
    finally:
        launcher.kill()
        launcher.wait()
        launcher.stdout.close()
    deadline = time.monotonic() + 10
    while not _exited(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if not _exited(pid):
        os.kill(pid, 9)
        pytest.fail("the server outlived its killed launcher by 10 s")


def test_reading_stderr_while_the_server_writes_loses_nothing(tmp_path):
    # The server's stderr descriptor shares its file offset with the
    # launcher's; a read that moved the offset made the server's next write
    # overwrite earlier lines (seen in CI as a half-overwritten
    # "metrics on port" line).
    binary = _script(tmp_path, "chatty", """
        import os, signal, sys, time
        signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
        print("hxemu-server listening on 127.0.0.1:45678", flush=True)
        for number in range(400):
            os.write(2, f"line {number:04d} of the server's log\\n".encode())
            time.sleep(0.0005)
        os.write(2, b"done\\n")
        while True:
            time.sleep(0.1)
    """)
    server = EmbeddedServer(binary=binary)
    server.start()
    try:
        # Read the log again and again while the server writes it.
        deadline = time.monotonic() + 30
        while "done" not in server.stderr_tail() and time.monotonic() < deadline:
            pass
        log = server._read_stderr(limit=1 << 20).splitlines()
    finally:
        server.stop()
    assert log == [f"line {n:04d} of the server's log" for n in range(400)] + ["done"]

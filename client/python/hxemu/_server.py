"""The embedded hxemu server: a private ``hxemu-server`` child process.

Used when no server address is configured (no argument, no
``HXEMU_ADDRESS``). The binary is taken from ``HXEMU_SERVER_BINARY``, else
from the build tree next to this package (``<repo>/build/server/hxemu-server``),
else from ``PATH``. The server listens on a free loopback port and is stopped
(SIGTERM, then SIGKILL) when Python exits or :func:`stop_embedded_server` /
:meth:`EmbeddedServer.stop` is called.
"""

from __future__ import annotations

import atexit
import fcntl
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Optional, Sequence

_LISTENING = re.compile(r"^hxemu-server listening on (\S+:\d+)\s*$")
_REPO_BINARY = Path(__file__).resolve().parents[3] / "build" / "server" / "hxemu-server"


class ServerStartError(RuntimeError):
    """The embedded server could not be started."""


def find_server_binary() -> str:
    """Path of the ``hxemu-server`` binary to launch.

    Order: ``HXEMU_SERVER_BINARY``, the build tree of the source checkout this
    package lives in, ``PATH``.
    """
    explicit = os.environ.get("HXEMU_SERVER_BINARY")
    if explicit:
        if not (os.path.isfile(explicit) and os.access(explicit, os.X_OK)):
            raise ServerStartError(
                f"HXEMU_SERVER_BINARY={explicit} is not an executable file")
        return explicit
    if _REPO_BINARY.is_file() and os.access(_REPO_BINARY, os.X_OK):
        return str(_REPO_BINARY)
    on_path = shutil.which("hxemu-server")
    if on_path:
        return on_path
    raise ServerStartError(
        "cannot find the hxemu-server binary: set HXEMU_SERVER_BINARY, build it "
        f"({_REPO_BINARY} via `cmake --build build`), put it on PATH, or connect "
        "to a running server with HXEMU_ADDRESS=host:port")


def _with_parent_death_signal(command: list) -> tuple:
    """``(command, preexec_fn)`` that make Linux SIGTERM the server if the
    launching thread dies (PR_SET_PDEATHSIG; it fires when the *thread* that
    started the child exits, so only from the main thread).

    By util-linux's ``setpriv --pdeathsig`` in front of the command where it
    exists (Debian: always), so that Popen needs no ``preexec_fn``: with one,
    Python forks the whole process, and a fork while gRPC's threads run (the
    client's channels) can abort it; without, it uses vfork, which runs no
    fork handlers. Else the prctl in a ``preexec_fn``.
    """
    if not (sys.platform.startswith("linux")
            and threading.current_thread() is threading.main_thread()):
        return command, None
    setpriv = shutil.which("setpriv")
    program = shutil.which(command[0])
    if setpriv and program:
        return [setpriv, "--pdeathsig", "TERM", "--", program, *command[1:]], None
    return command, _die_with_parent


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Ask Linux to SIGTERM the server if the launching thread dies."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    except Exception:  # noqa: BLE001 - best effort only
        pass


class EmbeddedServer:
    """A ``hxemu-server`` child process on a free loopback port.

    >>> with EmbeddedServer() as server:
    ...     client = hxemu.Client(server.address)
    """

    def __init__(self, binary: Optional[str] = None, num_chips: int = 1,
                 extra_args: Sequence[str] = (), startup_timeout: float = 30.0,
                 stop_timeout: float = 10.0):
        self.binary = binary
        self.num_chips = num_chips
        self.extra_args = list(extra_args)
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self.address: Optional[str] = None
        self._process: Optional[subprocess.Popen] = None
        self._stderr = None
        self._lock = threading.Lock()

    @property
    def pid(self) -> Optional[int]:
        return self._process.pid if self._process else None

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> str:
        """Start the server (if not running) and return its ``host:port``."""
        with self._lock:
            if self.running():
                return self.address
            self._cleanup()
            binary = self.binary or find_server_binary()
            command = [binary, "--listen=127.0.0.1:0", f"--num_chips={self.num_chips}",
                       *self.extra_args]
            self._stderr = tempfile.TemporaryFile(prefix="hxemu-server-", suffix=".stderr")
            # The server writes through a duplicate of this descriptor, which
            # shares its file offset: with O_APPEND its writes always land at
            # the end, and _read_stderr reads with pread, which moves no
            # offset, so reading while the server writes never overwrites.
            flags = fcntl.fcntl(self._stderr.fileno(), fcntl.F_GETFL)
            fcntl.fcntl(self._stderr.fileno(), fcntl.F_SETFL, flags | os.O_APPEND)
            command, preexec = _with_parent_death_signal(command)
            try:
                self._process = subprocess.Popen(
                    command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                    stderr=self._stderr, text=True, bufsize=1,
                    start_new_session=True, preexec_fn=preexec)
            except OSError as err:
                raise ServerStartError(f"cannot start {binary}: {err}") from None
            self.address = self._wait_for_address(binary)
            return self.address

    def _wait_for_address(self, binary: str) -> str:
        found = {}
        stdout = self._process.stdout

        def read_stdout():
            # Read the announcement, then keep draining so that the server
            # never blocks on a full pipe.
            try:
                with stdout:
                    for line in stdout:
                        if "address" not in found:
                            match = _LISTENING.match(line.strip())
                            if match:
                                found["address"] = match.group(1)
                                ready.set()
            except (OSError, ValueError):
                pass
            finally:
                ready.set()

        ready = threading.Event()
        threading.Thread(target=read_stdout, name="hxemu-server-stdout",
                         daemon=True).start()
        ready.wait(self.startup_timeout)
        if "address" in found:
            return found["address"]
        stdout_closed = ready.is_set()
        exit_code = self._process.poll()
        if exit_code is None and stdout_closed:
            # stdout closed: the process is exiting; collect its status
            try:
                exit_code = self._process.wait(2.0)
            except subprocess.TimeoutExpired:
                pass
        if exit_code is None:
            self._terminate()
            reason = ("did not print 'hxemu-server listening on HOST:PORT' "
                      + ("before closing its stdout" if stdout_closed else
                         f"within {self.startup_timeout:g} s"))
        else:
            reason = f"exited with status {exit_code} before it was listening"
        stderr = self._read_stderr()
        self._cleanup()
        raise ServerStartError(
            f"{binary} {reason}" + (f"; its stderr:\n{stderr}" if stderr else
                                    " (no stderr output)"))

    def _read_stderr(self, limit: int = 4000) -> str:
        if self._stderr is None:
            return ""
        try:
            fd = self._stderr.fileno()
            data = os.pread(fd, os.fstat(fd).st_size, 0)
        except (OSError, ValueError):
            return ""
        text = data.decode(errors="replace") if isinstance(data, bytes) else data
        text = text.strip()
        return text[-limit:]

    def stderr_tail(self) -> str:
        """The end of the server's stderr output (for error messages)."""
        return self._read_stderr()

    def _terminate(self) -> Optional[int]:
        process = self._process
        if process is None or process.poll() is not None:
            return process.returncode if process else None
        try:
            process.send_signal(signal.SIGTERM)
            return process.wait(self.stop_timeout)
        except subprocess.TimeoutExpired:
            warnings.warn(f"hxemu-server (pid {process.pid}) ignored SIGTERM for "
                          f"{self.stop_timeout:g} s; killing it", RuntimeWarning)
            process.kill()
            return process.wait()
        except ProcessLookupError:
            return process.poll()

    def _cleanup(self) -> None:
        # stdout is closed by its reader thread at EOF.
        self._process = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        self.address = None

    def stop(self) -> Optional[int]:
        """Stop the server (SIGTERM, then SIGKILL after ``stop_timeout``).

        Returns the exit status, or None if it was not running.
        """
        with self._lock:
            if self._process is None:
                return None
            status = self._terminate()
            self._cleanup()
            return status

    def __enter__(self) -> "EmbeddedServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


_embedded: Optional[EmbeddedServer] = None
_embedded_lock = threading.Lock()


def embedded_server() -> EmbeddedServer:
    """The process-wide embedded server, started on first use.

    If it has died it is started again (with a warning).
    """
    global _embedded
    with _embedded_lock:
        if _embedded is None:
            _embedded = EmbeddedServer()
            atexit.register(stop_embedded_server)
        elif _embedded.address is not None and not _embedded.running():
            warnings.warn("the embedded hxemu-server exited unexpectedly "
                          f"({_embedded.stderr_tail() or 'no stderr'}); restarting it",
                          RuntimeWarning)
        _embedded.start()
        return _embedded


def stop_embedded_server() -> None:
    """Stop the embedded server if it runs (also registered with atexit)."""
    with _embedded_lock:
        if _embedded is not None:
            _embedded.stop()

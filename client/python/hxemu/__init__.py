"""Python client of hxemu, the BrainScaleS-2 (HICANN-X) emulator service.

* :class:`hxemu.Client` — the low-level gRPC client (submit / wait / result).
* :mod:`hxemu.pynn` — a PyNN backend compatible with
  ``pynn_brainscales.brainscales2``: ``import hxemu.pynn as pynn``.
* :class:`hxemu.EmbeddedServer` — a private ``hxemu-server`` process, used
  when no ``HXEMU_ADDRESS`` is set.
* :mod:`hxemu.compat` — opt-in ``import pynn_brainscales.brainscales2``
  (``hxemu.compat.install()`` or ``HXEMU_PROVIDE_PYNN_BRAINSCALES=1``).
"""

from hxemu.errors import (CancelledError, DeadlineExceededError,
                          FailedPreconditionError, HxemuError,
                          InvalidArgumentError, JobExpiredError, NotFoundError,
                          PermissionDeniedError, ResourceExhaustedError,
                          UnavailableError, UnimplementedError)
from hxemu._server import (EmbeddedServer, ServerStartError, embedded_server,
                           find_server_binary, stop_embedded_server)
from hxemu.client import (Client, configured_address, default_address,
                          default_token, default_user)

from hxemu import compat as _compat

__version__ = "0.1.0"

# opt-in `import pynn_brainscales.brainscales2` (HXEMU_PROVIDE_PYNN_BRAINSCALES=1)
_compat.install_from_environment()

__all__ = [
    "CancelledError", "Client", "DeadlineExceededError", "EmbeddedServer",
    "FailedPreconditionError", "HxemuError", "InvalidArgumentError",
    "JobExpiredError", "NotFoundError", "PermissionDeniedError",
    "ResourceExhaustedError", "ServerStartError", "UnavailableError",
    "UnimplementedError",
    "configured_address", "default_address", "default_token", "default_user", "embedded_server", "find_server_binary",
    "stop_embedded_server",
]

"""``pynn.helper``: calibrations for ``setup(initial_config=...)``.

On BrainScaleS-2, ``helper.chip_from_nightly()`` loads the nightly
calibration of the setup in use and ``helper.chip_from_file(path)`` a stored
one; both return a ``lola.Chip`` for ``pynn.setup(initial_config=...)``. On
hxemu a calibration is an ``hxemu.v1.Calibration`` message: per neuron
circuit of one emulated chip, the hardware parameters that bring it to the
targets (computed by the server from measurements of that chip, like calix,
and cached there):

>>> calib = pynn.helper.chip_from_nightly()       # the server's default one
>>> pynn.helper.chip_to_file(calib, "calib.pbin")  # keep it
>>> pynn.setup(initial_config=pynn.helper.chip_from_file("calib.pbin"))
>>> pop = pynn.Population(1, pynn.cells.HXNeuron())  # a calibrated neuron
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Optional, Union

from hxemu.client import Client
from hxemu.errors import (DeadlineExceededError, HxemuError, InvalidArgumentError,
                          PermissionDeniedError, ResourceExhaustedError,
                          UnavailableError)


def _calibration_pb2():
    try:
        from hxemu.v1 import calibration_pb2  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise NotImplementedError(
            "this hxemu build has no calibration API (hxemu/v1/calibration_pb2.py "
            "is missing; rebuild the Python protos of a newer hxemu)") from None
    return calibration_pb2


def calibration_type():
    """The ``hxemu.v1.Calibration`` message class."""
    return _calibration_pb2().Calibration


def as_calibration(value):
    """``setup(initial_config=...)``: a ``hxemu.v1.Calibration`` (also
    accepted: its serialized bytes)."""
    calibration = calibration_type()
    if isinstance(value, calibration):
        return value
    if isinstance(value, (bytes, bytearray)):
        return chip_from_portable_binary(value)
    raise TypeError(
        "initial_config must be an hxemu.v1.Calibration (from "
        "pynn.helper.chip_from_nightly() or chip_from_file()), got "
        f"{type(value).__name__}; hxemu has no lola.Chip")


def chip_from_portable_binary(data: bytes):
    """A calibration from its serialized form (what :func:`chip_to_file`
    writes)."""
    calibration = calibration_type()()
    try:
        with warnings.catch_warnings():
            # the C++ parser reports some malformed input as a warning only
            warnings.simplefilter("error")
            calibration.ParseFromString(bytes(data))
    except Exception as err:  # DecodeError, RuntimeWarning
        raise ValueError(f"not a serialized hxemu calibration: {err}") from None
    if not calibration.circuits:
        raise ValueError("not an hxemu calibration: it calibrates no neuron circuit")
    return calibration


def chip_from_file(path: Union[str, os.PathLike]):
    """The calibration stored in ``path`` by :func:`chip_to_file` (binary
    protobuf, or protobuf JSON if the name ends in ``.json``)."""
    path = Path(path)
    if path.suffix == ".json":
        from google.protobuf import json_format  # pylint: disable=import-outside-toplevel
        calibration = calibration_type()()
        try:
            json_format.Parse(path.read_text(encoding="utf-8"), calibration)
        except json_format.ParseError as err:
            raise ValueError(f"{path}: not an hxemu calibration: {err}") from None
        return calibration
    try:
        return chip_from_portable_binary(path.read_bytes())
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def chip_to_file(calibration, path: Union[str, os.PathLike]) -> None:
    """Store ``calibration`` in ``path`` (binary protobuf, or protobuf JSON
    if the name ends in ``.json``)."""
    path = Path(path)
    calibration = as_calibration(calibration)
    if path.suffix == ".json":
        from google.protobuf import json_format  # pylint: disable=import-outside-toplevel
        path.write_text(json_format.MessageToJson(calibration), encoding="utf-8")
    else:
        path.write_bytes(calibration.SerializeToString(deterministic=True))


def _client_and_chip(chip_id: Optional[int], connection):
    from hxemu.pynn import simulator  # pylint: disable=import-outside-toplevel
    state = simulator.state
    if chip_id is None and state is not None:
        chip_id = state.chip_id
    if connection is None and state is not None and \
            (state.connection is not None or state.has_client()):
        return state.client(), chip_id, False
    if isinstance(connection, Client):
        return connection, chip_id, False
    return Client(connection), chip_id, True


def chip_from_nightly(chip_id: Optional[int] = None, connection=None, targets=None):
    """The server's calibration of the chip in use, for
    ``pynn.setup(initial_config=...)``.

    The chip is ``chip_id``, else the one of the current ``pynn.setup(
    chip_id=...)``, else the server picks one (the calibration says which;
    a run with it goes to that chip). The server computes the default
    calibration (calix' default targets) of every chip once and then serves
    it from its cache. ``targets`` (a ``hxemu.v1.CalibrationTargets``) asks
    for other targets instead.

    :raises RuntimeError: the server has no calibration for the chip (or
        the calibration failed there).
    :raises hxemu.UnavailableError: the server cannot be reached.
    :raises hxemu.InvalidArgumentError: ``targets`` out of range.
    """
    client, chip_id, owned = _client_and_chip(chip_id, connection)
    try:
        return client.calibration(chip_id, targets)
    except (UnavailableError, InvalidArgumentError, DeadlineExceededError,
            PermissionDeniedError, ResourceExhaustedError):
        raise  # not about the calibration: the connection or the request
    except HxemuError as err:
        name = "any chip" if chip_id is None else f"chip {chip_id}"
        raise RuntimeError(
            f'Could not find a nightly calibration for setup "{name}": '
            f"{err.message}") from err
    finally:
        if owned:
            client.close()


__all__ = ["as_calibration", "calibration_type", "chip_from_file", "chip_from_nightly",
           "chip_from_portable_binary", "chip_to_file"]

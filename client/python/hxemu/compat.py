"""Opt-in ``pynn_brainscales`` compatibility import.

Unchanged BrainScaleS-2 notebooks do ``import pynn_brainscales.brainscales2
as pynn``. After

>>> import hxemu.compat
>>> hxemu.compat.install()

(or with ``HXEMU_PROVIDE_PYNN_BRAINSCALES=1`` in the environment and
``import hxemu`` before the notebook's imports, or by running a script with
``python3 -m hxemu.compat SCRIPT [ARGS...]``) these imports resolve to hxemu:

* ``pynn_brainscales.brainscales2`` -> :mod:`hxemu.pynn` (the same module
  object, so classes are identical),
* ``pynn_brainscales.brainscales2.X[.Y]`` -> ``hxemu.pynn.X[.Y]`` where that
  exists (``standardmodels``, ``standardmodels.cells``,
  ``standardmodels.synapses``, ...); anything else is a ModuleNotFoundError.

Nothing happens unless the user opts in, and the finder never shadows a real
``pynn_brainscales``: if any other importer can find ``pynn_brainscales`` (or
it is already imported), the finder steps aside, and it serves submodules
only of its own ``pynn_brainscales`` stand-in.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from typing import Optional

#: environment variable that makes ``import hxemu`` call :func:`install`
ENV_VARIABLE = "HXEMU_PROVIDE_PYNN_BRAINSCALES"

_TOP = "pynn_brainscales"
_PREFIX = "pynn_brainscales.brainscales2"
_TARGET = "hxemu.pynn"
#: attribute marking hxemu's stand-in ``pynn_brainscales`` package
MARKER = "__hxemu_compat__"


def _target_name(fullname: str) -> Optional[str]:
    if fullname == _PREFIX:
        return _TARGET
    if fullname.startswith(_PREFIX + "."):
        return _TARGET + fullname[len(_PREFIX):]
    return None


class _Loader(importlib.abc.Loader):
    """Loads the stand-in package, or aliases an hxemu module."""

    def __init__(self, target: Optional[str]):
        self.target = target

    def create_module(self, spec):
        return None  # default module creation

    def exec_module(self, module):
        if self.target is None:  # the top-level stand-in package
            setattr(module, MARKER, True)
            module.__doc__ = ("hxemu's stand-in for pynn_brainscales "
                              "(see hxemu.compat); brainscales2 is hxemu.pynn")
            module.__path__ = []
            return
        # the import system returns whatever is in sys.modules after exec
        sys.modules[module.__name__] = importlib.import_module(self.target)


class PynnBrainscalesFinder(importlib.abc.MetaPathFinder):
    """Meta-path finder providing ``pynn_brainscales.*`` from hxemu."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname == _TOP:
            if self._found_elsewhere(fullname, path, target):
                return None  # a real pynn_brainscales is installed: use it
            return importlib.machinery.ModuleSpec(fullname, _Loader(None),
                                                  is_package=True)
        if not fullname.startswith(_TOP + "."):
            return None
        parent = sys.modules.get(_TOP)
        if parent is None or not getattr(parent, MARKER, False):
            return None  # submodule of a real pynn_brainscales
        target_name = _target_name(fullname)
        if target_name is None:
            return None
        try:
            if importlib.util.find_spec(target_name) is None:
                return None
        except ModuleNotFoundError:
            return None
        return importlib.machinery.ModuleSpec(fullname, _Loader(target_name),
                                              is_package=True)

    def _found_elsewhere(self, fullname, path, target) -> bool:
        for finder in list(sys.meta_path):
            if finder is self or isinstance(finder, PynnBrainscalesFinder):
                continue
            find_spec = getattr(finder, "find_spec", None)
            if find_spec is None:
                continue
            try:
                if find_spec(fullname, path, target) is not None:
                    return True
            except (ImportError, ValueError, AttributeError, TypeError):
                continue
        return False


def installed() -> bool:
    """Whether the compatibility finder is on ``sys.meta_path``."""
    return any(isinstance(f, PynnBrainscalesFinder) for f in sys.meta_path)


def install() -> bool:
    """Make ``import pynn_brainscales.brainscales2`` give :mod:`hxemu.pynn`.

    Idempotent. Returns False (and changes nothing) if a real
    ``pynn_brainscales`` is already imported or installed, True otherwise.
    """
    existing = sys.modules.get(_TOP)
    if existing is not None and not getattr(existing, MARKER, False):
        return False
    if existing is None and PynnBrainscalesFinder()._found_elsewhere(_TOP, None, None):
        return False  # a real pynn_brainscales is installed
    if not installed():
        # first, so that the submodules of the stand-in are not looked up in
        # hxemu/pynn/ by the path finder (that would duplicate modules); the
        # top-level name defers to every other finder
        sys.meta_path.insert(0, PynnBrainscalesFinder())
    return True


def uninstall() -> None:
    """Remove the finder and forget the stand-in modules (not hxemu.pynn)."""
    sys.meta_path[:] = [f for f in sys.meta_path
                        if not isinstance(f, PynnBrainscalesFinder)]
    top = sys.modules.get(_TOP)
    if top is not None and getattr(top, MARKER, False):
        for name in [n for n in sys.modules if n == _TOP or n.startswith(_TOP + ".")]:
            del sys.modules[name]


def install_from_environment() -> bool:
    """:func:`install` if ``HXEMU_PROVIDE_PYNN_BRAINSCALES`` is 1/true/yes/on."""
    value = os.environ.get(ENV_VARIABLE, "").strip().lower()
    if value in ("1", "true", "yes", "on"):
        return install()
    return False


def main(argv=None) -> None:
    """``python3 -m hxemu.compat SCRIPT [ARGS...]``: run SCRIPT with the
    compatibility import installed (as ``python3 SCRIPT ARGS...`` would)."""
    import runpy
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python3 -m hxemu.compat SCRIPT [ARGS...]\n\n"
              "Runs SCRIPT with `import pynn_brainscales.brainscales2` "
              "provided by hxemu.pynn.", file=sys.stderr)
        raise SystemExit(0 if argv else 2)
    if not install():
        print("hxemu.compat: a real pynn_brainscales is installed; using it",
              file=sys.stderr)
    sys.argv = argv
    runpy.run_path(argv[0], run_name="__main__")


if __name__ == "__main__":
    # `python3 -m hxemu.compat`: use the package's module (one finder class)
    from hxemu.compat import main as _main
    _main()

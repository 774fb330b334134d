"""The compiled core, mpdiffuser._core, loaded on first use: reading data, training and exporting
work without it (a training node need not build it); planning needs it and says so."""

from __future__ import annotations

NATIVE_MISSING = ("planning needs mpdiffuser's compiled core (mpdiffuser._core), which this installation lacks: "
                  "reinstall with `bash scripts/install.sh` or `pip install .` on a machine with a C++17 compiler")


def core():
    """The mpdiffuser._core module; ImportError with NATIVE_MISSING when it is not built."""
    try:
        from mpdiffuser import _core
    except ImportError as exc:
        raise ImportError(NATIVE_MISSING) from exc
    return _core


def available() -> bool:
    try:
        core()
        return True
    except ImportError:
        return False

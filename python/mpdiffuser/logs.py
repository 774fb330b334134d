"""How mpdiffuser talks outside a terminal, and what its messages call a setting.

Progress bars show where stderr is a terminal. Elsewhere (a script, a job, a notebook's log) the
same news goes through Python's logging, to the logger "mpdiffuser": training progress at each
checkpoint (where no bar shows), resume notices and final losses at INFO, data problems as
warnings. `mpd.fit` installs a stderr handler for it when neither it nor the root logger has one
(configure logging yourself to send it elsewhere; progress=False silences it).

Messages name a setting as the caller gave it: "--steps 1000" on the command line, "steps=1000"
under `mpd.fit` (python_api()).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys

logger = logging.getLogger("mpdiffuser")
_PYTHON = contextvars.ContextVar("mpdiffuser_python_api", default=False)


@contextlib.contextmanager
def python_api():
    """Within it, messages name settings as Python keyword arguments."""
    token = _PYTHON.set(True)
    try:
        yield
    finally:
        _PYTHON.reset(token)


def setting(name: str, value=None) -> str:
    """A setting as the caller names it: setting("force", True) is "--force" on the command line,
    "force=True" in Python; setting("steps", 1000): "--steps 1000", "steps=1000"."""
    if _PYTHON.get():
        return f"{name}={value!r}" if value is not None else f"{name}="
    flag = "--" + name.replace("_", "-")
    return flag if value is True or value is None else f"{flag} {value}"


def bars_show(progress: bool) -> bool:
    """Whether tqdm draws a progress bar for `progress` (it does on a terminal only)."""
    return progress and sys.stderr.isatty()


def talk(progress: bool) -> None:
    """Route the "mpdiffuser" logger to stderr at INFO when the caller asked for progress and
    nothing is configured to receive it (per-checkpoint progress lines come only where no bar shows)."""
    if not progress or logger.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s mpdiffuser: %(message)s", "%H:%M:%S"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)

"""One training at a time per bundle: a lock file BUNDLE/train.lock that names its owner.

Two `mpdiffuser train` on one bundle would both train to the end on the same checkpoint files, each
overwriting the other's. The lock is taken atomically (O_CREAT | O_EXCL) and holds the owner's pid,
host and start time; a lock whose owner is gone (same host, no such process) is stale and is
taken over with a note. A lock from another host cannot be checked from here: the message says
whose it is and how to clear it.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

LOCK_NAME = "train.lock"


class BundleLocked(RuntimeError):
    """Another process trains this bundle."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


class BundleLock:
    """`with BundleLock(bundle_dir):` holds BUNDLE/train.lock for the block (or raises BundleLocked)."""

    def __init__(self, bundle_dir: str | Path, say=print):
        self.path = Path(bundle_dir) / LOCK_NAME
        self.say = say
        self.held = False

    def _owner(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(3):  # a stale lock is removed and the take tried again
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                owner = self._owner()
                if owner is None:  # being written this instant, or unreadable: look again shortly
                    time.sleep(0.05)
                    owner = self._owner()
                if owner is None:
                    raise BundleLocked(f"{self.path.parent} is locked by {self.path}, which does not say its owner; "
                                       "if no training runs on this bundle, delete it") from None
                if owner.get("host") == me["host"] and isinstance(owner.get("pid"), int) and not _alive(owner["pid"]):
                    self.say(f"note: removing the stale lock {self.path} of process {owner['pid']}, which has ended")
                    self.path.unlink(missing_ok=True)
                    continue
                raise BundleLocked(f"{self.path.parent} is being trained by process {owner.get('pid')} on "
                                   f"{owner.get('host')} (since {owner.get('started')}); wait for it, or delete "
                                   f"{self.path} if that process is gone") from None
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.held = True
            return
        raise BundleLocked(f"could not take {self.path}: it keeps reappearing")

    def release(self) -> None:
        if self.held:
            owner = self._owner()
            if owner is None or owner.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> "BundleLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

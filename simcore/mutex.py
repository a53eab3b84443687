"""Sleeping mutexes (kmutex_t / struct mutex): a waiter gives its CPU up instead of spinning."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

import simpy

from simcore.cpu import Gen, Thread

if TYPE_CHECKING:
    from simcore.machine import Machine


class Mutex:
    """mutex_lock / mutex_unlock / mutex_trylock with FIFO hand-off to sleeping waiters."""

    def __init__(self, machine: Machine, name: str) -> None:
        self.machine = machine
        self.env = machine.env
        self.name = name
        self.owner: Thread | None = None
        """Thread holding the mutex, or None."""
        self.waiters: deque[tuple[Thread, simpy.Event]] = deque()
        self.acquisitions = 0
        self.contentions = 0

    def __repr__(self) -> str:
        return f"<Mutex {self.name}>"

    def lock(self, t: Thread) -> Gen:
        """mutex_lock: take the mutex, sleeping while another thread holds it."""
        yield from t.sync()
        t.charge("atomic_op")
        self.acquisitions += 1
        if self.owner is None:
            self.owner = t
            return
        self.contentions += 1
        ev = self.env.event()
        self.waiters.append((t, ev))
        yield from t.block(ev, self)

    def trylock(self, t: Thread) -> Gen:
        """mutex_trylock: True if taken, False if held (never sleeps)."""
        yield from t.sync()
        t.charge("atomic_op")
        if self.owner is None:
            self.owner = t
            self.acquisitions += 1
            return True
        return False

    def unlock(self, t: Thread) -> Gen:
        """mutex_unlock: hand the mutex to the first sleeping waiter, if any."""
        yield from t.sync()
        t.charge("atomic_op")
        if self.waiters:
            nt, ev = self.waiters.popleft()
            self.owner = nt
            ev.succeed()
        else:
            self.owner = None

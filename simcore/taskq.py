"""Task queues (Solaris/SPL taskq_t): named queues served by kernel worker threads.

Workers are `Thread`s that need a CPU to run. A fixed taskq starts all its workers; a dynamic one
(TASKQ_DYNAMIC) starts one and spawns more, up to `nthreads`, when a task is dispatched and no
worker is idle. Tasks run in dispatch order.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import simpy

from simcore.cpu import Gen, Thread
from simcore.sched import NICE_0, Priority

TaskFunc = Callable[..., Gen]


@dataclass
class Task:
    """One dispatched task (taskq_ent_t)."""

    id: int
    func: TaskFunc
    args: tuple[Any, ...]
    dispatched_at: int
    state: str = "queued"
    """delayed, queued, running, done or cancelled."""
    worker: Thread | None = None
    started_at: int = -1
    finished_at: int = -1
    dispatcher: str = ""
    taskq: Any = None
    """The taskq it was dispatched on (a queued task waits for that taskq's workers)."""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return getattr(self.func, "__name__", "task")


class Taskq:
    """taskq_create / taskq_dispatch / taskq_dispatch_delay / taskq_cancel_id."""

    def __init__(self, machine: Any, name: str, nthreads: int = 1, dynamic: bool = False,
                 affinity: list[int] | None = None, pri: Priority = NICE_0,
                 memalloc_noio: bool = False) -> None:
        self.machine = machine
        self.env = machine.env
        self.name = name
        self.nthreads = nthreads
        """Maximum worker threads."""
        self.dynamic = dynamic
        self.affinity = affinity
        self.pri = pri
        """Scheduling class and priority of the workers (taskq_create's pri)."""
        self.memalloc_noio = memalloc_noio
        """Workers run with PF_MEMALLOC_NOIO for their whole life (the SPL's taskq_thread
        marks itself with spl_fstrans_mark)."""
        self.queue: deque[Task] = deque()
        """Tasks waiting for a worker."""
        self.tasks: dict[int, Task] = {}
        """Tasks not yet finished, by id."""
        self.workers: list[Thread] = []
        self._idle: list[tuple[Thread, simpy.Event]] = []
        self._next_id = 1
        self._spawning = False
        self.dispatched = 0
        self.completed = 0
        for _ in range(1 if dynamic else nthreads):
            self._spawn_worker(initial=True)

    def __repr__(self) -> str:
        return f"<Taskq {self.name}>"

    def _spawn_worker(self, initial: bool = False) -> None:
        idx = len(self.workers)
        self._spawning = not initial

        def body(t: Thread) -> Gen:
            if not initial:
                t.charge("thread_spawn")
                yield from t.sync()
                self._spawning = False
            yield from self._worker_loop(t)

        t = self.machine.spawn(f"{self.name}/{idx}", body, affinity=self.affinity, pri=self.pri)
        t.memalloc_noio = self.memalloc_noio
        t.taskq = self  # type: ignore[attr-defined]
        t.task = None  # type: ignore[attr-defined]
        self.workers.append(t)

    def _worker_loop(self, t: Thread) -> Gen:
        while True:
            if not self.queue:
                ev = self.env.event()
                self._idle.append((t, ev))
                yield from t.block(ev, ("taskq_idle", self))
                continue
            task = self.queue.popleft()
            task.state = "running"
            task.worker = t
            task.started_at = self.env.now
            t.task = task  # type: ignore[attr-defined]
            t.stalled_since = task.started_at
            yield from task.func(t, *task.args)
            t.stalled_since = None
            yield from t.sync()
            yield from t.cond_resched()
            task.state = "done"
            task.finished_at = self.env.now
            t.task = None  # type: ignore[attr-defined]
            self.tasks.pop(task.id, None)
            self.completed += 1

    def _enqueue(self, task: Task) -> None:
        if task.state == "cancelled":
            return
        task.state = "queued"
        self.queue.append(task)
        if self._idle:
            _w, ev = self._idle.pop(0)
            ev.succeed()
        elif self.dynamic and len(self.workers) < self.nthreads and not self._spawning:
            self._spawn_worker()

    def _new_task(self, func: TaskFunc, args: tuple[Any, ...], who: str) -> Task:
        task = Task(self._next_id, func, args, self.env.now, dispatcher=who, taskq=self)
        self._next_id += 1
        self.tasks[task.id] = task
        self.dispatched += 1
        return task

    def dispatch(self, t: Thread, func: TaskFunc, *args: Any) -> Gen:
        """taskq_dispatch: queue `func(worker, *args)`; returns the task id."""
        yield from t.sync()
        t.charge("taskq_dispatch")
        task = self._new_task(func, args, t.name)
        self._enqueue(task)
        return task.id

    def dispatch_nowait(self, func: TaskFunc, *args: Any) -> int:
        """Dispatch from outside any simulated thread (set-up code, timers)."""
        task = self._new_task(func, args, "")
        self._enqueue(task)
        return task.id

    def dispatch_delay(self, t: Thread | None, func: TaskFunc, delay: int, *args: Any) -> Gen:
        """taskq_dispatch_delay: queue `func` after `delay` ns; returns the task id."""
        if t is not None:
            yield from t.sync()
            t.charge("taskq_dispatch")
        task = self._new_task(func, args, t.name if t is not None else "")
        task.state = "delayed"
        self.env.timeout(max(0, delay)).callbacks.append(lambda _ev: self._enqueue(task))
        return task.id

    def cancel(self, t: Thread, tid: int) -> Gen:
        """taskq_cancel_id: remove a task that has not started; True if it was cancelled."""
        yield from t.sync()
        task = self.tasks.get(tid)
        if task is None or task.state not in ("queued", "delayed"):
            return False
        if task.state == "queued":
            self.queue.remove(task)
        task.state = "cancelled"
        del self.tasks[tid]
        return True

    def running(self) -> list[Task]:
        return [w.task for w in self.workers if getattr(w, "task", None) is not None]

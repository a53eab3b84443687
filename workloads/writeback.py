"""`writeback`: a reclaim dependency on an allocator cache, the shape of the SPL's low-memory
deadlocks (zfs#133, zfs#1101; spl-history section B1 items 1-4): direct reclaim must write dirty
pages back before it can free them, and the writeback path itself allocates objects from a
kmem cache.

The workload registers a reclaim dependency named `writeback` with the page allocator. A thread
in direct reclaim (for example the SPL growth worker inside vmalloc) queues a writeback request
and sleeps until the writeback thread has completed it. The writeback thread serves requests in
batches: it allocates `objects` objects from `cache` (as a zvol or txg_sync thread allocates
zio buffers), holds them for `io_time`, frees them, turns `pages_cleaned` dirty pages into
clean page cache that reclaim can drop, and wakes every reclaimer of the batch. When the cache
cannot give it objects, because its growth is the very reclaimer that waits, the cycle is
closed: emergency objects (SPL) break it, KMC_NOEMERGENCY leaves a deadlock the detector
reports.

Dirty pages are made with `dirty_pages` at start (counted as used, not reclaimable) so that
memory really is short.
"""

from __future__ import annotations

from pydantic import Field

from simcore.cpu import Gen, Thread
from simcore.flags import KM_NOSLEEP, KM_PUSHPAGE, KM_SLEEP
from simcore.units import Duration
from workloads.base import Workload, WorkloadParams

_FLAGS = {"KM_SLEEP": KM_SLEEP, "KM_PUSHPAGE": KM_PUSHPAGE, "KM_NOSLEEP": KM_NOSLEEP}


class WritebackParams(WorkloadParams):
    cache: str = Field(description="cache the writeback path allocates from")
    objects: int = Field(default=64, gt=0, description="objects one writeback batch allocates")
    io_time: Duration = Field(default=2_000_000, ge=0, description="time the I/O of a batch takes")
    pages_cleaned: int = Field(default=4096, ge=0,
                               description="dirty pages a batch makes reclaimable")
    dirty_pages: int = Field(default=0, ge=0, description="dirty pages present at start")
    flags: str = Field(default="KM_PUSHPAGE", pattern="^(KM_SLEEP|KM_PUSHPAGE|KM_NOSLEEP)$",
                       description="allocation flags of the writeback path")
    cpu: int = Field(default=0, ge=0, description="CPU the writeback thread runs on")


class Writeback(Workload):
    """A writeback thread that reclaim waits for and that allocates from a kmem cache."""

    kind = "writeback"
    summary = "reclaim dependency: direct reclaim waits for writeback that allocates from a cache"
    Params = WritebackParams

    def start(self) -> None:
        p: WritebackParams = self.params
        if p.cpu >= self.machine.ncpus:
            raise ValueError(f"writeback: cpu {p.cpu} does not exist")
        self._cache = self.caches[p.cache]
        self._flags = _FLAGS[p.flags]
        self._pending: list[tuple[Thread, object]] = []
        self._kick = None
        self.batches = 0
        mem = self.machine.memory
        mem.used += p.dirty_pages
        self._dirty = p.dirty_pages
        self.thread = self.spawn(f"{self.label}/flush", self._flusher, cpu=p.cpu)
        mem.add_reclaim_dependency("writeback", self._wait_for_writeback)

    def _wait_for_writeback(self, t: Thread) -> Gen:
        """The reclaim side: queue a request and sleep until its batch has been written."""
        if t is self.thread or not self._dirty:
            return
        done = self.machine.env.event()
        self._pending.append((t, done))
        if self._kick is not None and not self._kick.triggered:
            self._kick.succeed()
        t.waits_for = [self.thread]
        yield from t.block(done, ("reclaim", "writeback"))
        t.waits_for = None

    def _flusher(self, t: Thread) -> Gen:
        p: WritebackParams = self.params
        env = self.machine.env
        mem = self.machine.memory
        m = self.machine.metrics
        while True:
            if not self._pending:
                self._kick = env.event()
                yield from t.block(self._kick, ("sleep", "writeback idle"))
                continue
            batch, self._pending = self._pending, []
            m.event("writeback_start", cpu=t.cpu.id, waiters=len(batch), objects=p.objects)
            held = []
            for _ in range(p.objects):
                obj = yield from self.alloc(t, self._cache, self._flags)
                if obj is not None:
                    held.append(obj)
            if p.io_time:
                yield from t.sleep(p.io_time)
            for obj in held:
                yield from self.free(t, self._cache, obj)
            cleaned = min(p.pages_cleaned, self._dirty)
            self._dirty -= cleaned
            mem.reclaimable += cleaned
            self.batches += 1
            yield from t.sync()
            m.event("writeback_done", cpu=t.cpu.id, objects=len(held), pages=cleaned)
            for _waiter, done in batch:
                done.succeed()

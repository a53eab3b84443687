"""Per-CPU sheaves of the 6.18 patch (linux-6.18-slab-sheaves-patch.txt): each CPU has a main
sheaf (never NULL) and an optional spare, protected by a local_trylock_t; alloc_from_pcs and
free_to_pcs are the fast paths, __pcs_replace_empty_main / __pcs_replace_full_main exchange
sheaves with the spare and the node's barn, refill_sheaf fills from slabs by bulk allocation
and sheaf_flush_main / sheaf_flush_unused empty into slabs by bulk free.

The local lock disables preemption, not interrupts. An interrupt that arrives while a thread
holds it (it can: the barn's spin_unlock_irqrestore enables IRQs with the local lock still
held) finds the trylock failing and falls back to the cpu slab path; the model counts those
failures as `pcs_trylock_fail` (not a kernel counter).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from policies.base import Gen
from policies.slub.structs import (
    ALLOC_PCS,
    BARN_GET,
    BARN_GET_FAIL,
    BARN_PUT,
    BARN_PUT_FAIL,
    E2BIG,
    FREE_PCS,
    SHEAF_ALLOC,
    SHEAF_FLUSH,
    SHEAF_FREE,
    SHEAF_REFILL,
    SlubCache,
)
from simcore.cpu import Thread
from simcore.flags import can_sleep

if TYPE_CHECKING:
    from policies.slub.barn import NodeBarn

PCS_BATCH_MAX = 32
"""sheaf_flush_main moves at most this many objects per local-lock hold."""
SHEAF_HEADER = 24
"""sizeof(struct slab_sheaf) before objects[]: rcu_head / barn_list, size, padding."""
KMALLOC_SIZES = (8, 16, 32, 64, 96, 128, 192, 256, 512, 1024, 2048, 4096, 8192)


def kmalloc_size(n: int) -> int:
    """The kmalloc size class a kzalloc of `n` bytes comes from (page multiples above 8 KiB)."""
    for k in KMALLOC_SIZES:
        if n <= k:
            return k
    return -(-n // 4096) * 4096


@dataclass(eq=False)
class SlabSheaf:
    """struct slab_sheaf: an array of object pointers (`size` = len(objects))."""

    objects: list[int] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.objects)


@dataclass(eq=False)
class SlubPercpuSheaves:
    """struct slub_percpu_sheaves: the local_trylock_t, the main and the spare sheaf."""

    main: SlabSheaf
    spare: SlabSheaf | None = None
    locked: bool = False
    """local_trylock_t acquired."""


class SlubSheaves:
    """Sheaf paths of SlubPolicy."""

    # --- the local lock -----------------------------------------------------------------------
    def pcs_trylock(self, t: Thread, s: SlubCache) -> bool:
        """local_trylock(&s->cpu_sheaves->lock): preemption off; False if this CPU's sheaves
        are already locked (by the context this interrupt handler interrupted)."""
        assert s.cpu_sheaves is not None
        pcs = s.cpu_sheaves[t.cpu.id]
        if pcs.locked:
            s.pcs_trylock_fail += 1
            return False
        pcs.locked = True
        t.preempt_count += 1
        return True

    def pcs_unlock(self, t: Thread, s: SlubCache) -> None:
        """local_unlock: the lock is per CPU, and the holder cannot have migrated."""
        assert s.cpu_sheaves is not None
        s.cpu_sheaves[t.cpu.id].locked = False
        t.preempt_count -= 1

    # --- sheaf memory -----------------------------------------------------------------------------
    def sheaf_bytes(self, s: SlubCache) -> int:
        """kzalloc(struct_size(sheaf, objects, sheaf_capacity)) rounded to its kmalloc size."""
        return kmalloc_size(SHEAF_HEADER + 8 * s.sheaf_capacity)

    def alloc_empty_sheaf(self, t: Thread, s: SlubCache) -> SlabSheaf:
        """alloc_empty_sheaf: kzalloc a sheaf (SHEAF_ALLOC); the kmalloc never fails here."""
        t.charge("kmalloc")
        self.stat(t, s, SHEAF_ALLOC)
        sheaf = SlabSheaf()
        s.live_sheaves.add(sheaf)
        return sheaf

    def free_empty_sheaf(self, t: Thread, s: SlubCache, sheaf: SlabSheaf) -> None:
        """free_empty_sheaf: kfree (SHEAF_FREE)."""
        assert not sheaf.objects
        t.charge("kmalloc")
        self.stat(t, s, SHEAF_FREE)
        s.live_sheaves.discard(sheaf)

    def refill_sheaf(self, t: Thread, s: SlubCache, sheaf: SlabSheaf, flags: int) -> Gen:
        """refill_sheaf: bulk-allocate what the sheaf lacks (SHEAF_REFILL); False when the
        bulk allocation failed."""
        to_fill = s.sheaf_capacity - sheaf.size
        if not to_fill:
            return True
        objs = yield from self.alloc_bulk(t, s, flags, to_fill)
        sheaf.objects.extend(objs)
        s.transit -= len(objs)
        self.stat(t, s, SHEAF_REFILL, len(objs))
        return len(objs) == to_fill

    def alloc_full_sheaf(self, t: Thread, s: SlubCache, flags: int) -> Gen:
        """alloc_full_sheaf: a new sheaf, refilled; None (sheaf freed) on failure."""
        sheaf = self.alloc_empty_sheaf(t, s)
        ok = yield from self.refill_sheaf(t, s, sheaf, flags)
        if not ok:
            yield from self.sheaf_flush_unused(t, s, sheaf)
            self.free_empty_sheaf(t, s, sheaf)
            return None
        return sheaf

    # --- flushing -------------------------------------------------------------------------------
    def sheaf_flush_main(self, t: Thread, s: SlubCache) -> Gen:
        """sheaf_flush_main: in batches of PCS_BATCH_MAX taken from the main sheaf under the
        local trylock, bulk-free to the slabs outside it (SHEAF_FLUSH); True if anything was
        flushed."""
        assert s.cpu_sheaves is not None
        ret = False
        while True:
            if not self.pcs_trylock(t, s):
                return ret
            main = s.cpu_sheaves[t.cpu.id].main
            batch = min(PCS_BATCH_MAX, main.size)
            objs = main.objects[main.size - batch:]
            del main.objects[main.size - batch:]
            s.transit += batch
            t.charge("object_move", batch)
            remaining = main.size
            self.pcs_unlock(t, s)
            yield from self.free_bulk(t, s, objs)
            self.stat(t, s, SHEAF_FLUSH, batch)
            ret = True
            if not remaining:
                return ret

    def sheaf_flush_unused(self, t: Thread, s: SlubCache, sheaf: SlabSheaf) -> Gen:
        """sheaf_flush_unused: bulk-free a sheaf no CPU owns (SHEAF_FLUSH)."""
        if not sheaf.objects:
            return
        self.stat(t, s, SHEAF_FLUSH, sheaf.size)
        objs, sheaf.objects = sheaf.objects, []
        s.transit += len(objs)
        yield from self.free_bulk(t, s, objs)

    def pcs_flush_all(self, t: Thread, s: SlubCache) -> Gen:
        """pcs_flush_all (flush_cpu_slab on this CPU): detach and flush the spare, free it,
        then flush the main sheaf; the barn is skipped."""
        assert s.cpu_sheaves is not None
        assert self.pcs_trylock(t, s), "flush work cannot interrupt a sheaf holder"
        pcs = s.cpu_sheaves[t.cpu.id]
        spare, pcs.spare = pcs.spare, None
        self.pcs_unlock(t, s)
        if spare is not None:
            yield from self.sheaf_flush_unused(t, s, spare)
            self.free_empty_sheaf(t, s, spare)
        yield from self.sheaf_flush_main(t, s)

    # --- allocation -----------------------------------------------------------------------------
    def alloc_from_pcs(self, t: Thread, s: SlubCache, flags: int) -> Gen:
        """alloc_from_pcs: under the local trylock pop from the main sheaf, replacing it first
        when empty (__pcs_replace_empty_main); None sends the caller to the slab path."""
        assert s.cpu_sheaves is not None
        if not self.pcs_trylock(t, s):
            return None
        pcs = s.cpu_sheaves[t.cpu.id]
        if not pcs.main.objects:
            pcs = yield from self.pcs_replace_empty_main(t, s, pcs, flags)
            if pcs is None:
                return None
        obj = pcs.main.objects.pop()
        t.charge("magazine_pop")
        self.pcs_unlock(t, s)
        self.stat(t, s, ALLOC_PCS)
        return obj

    def pcs_replace_empty_main(self, t: Thread, s: SlubCache, pcs: SlubPercpuSheaves,
                               flags: int) -> Gen:
        """__pcs_replace_empty_main (local lock held): a non-empty spare becomes main; else a
        full sheaf from the barn for the empty main (BARN_GET / BARN_GET_FAIL); else, if the
        caller may block, refill the spare or an empty barn sheaf (or a new one) outside the
        lock and install it. Returns the (re-read) sheaves with the lock held, or None with it
        dropped."""
        if pcs.spare is not None and pcs.spare.size:
            pcs.main, pcs.spare = pcs.spare, pcs.main
            t.charge("list_op")
            return pcs
        barn = s.node[t.cpu.node].barn
        assert barn is not None
        full = yield from self.barn_replace_empty_sheaf(t, barn, pcs.main)
        if full is not None:
            self.stat(t, s, BARN_GET)
            pcs.main = full
            return pcs
        self.stat(t, s, BARN_GET_FAIL)
        can_alloc = can_sleep(flags)
        empty = None
        if can_alloc:
            if pcs.spare is not None:
                empty, pcs.spare = pcs.spare, None
            else:
                empty = yield from self.barn_get_empty_sheaf(t, barn)
        self.pcs_unlock(t, s)
        if not can_alloc:
            return None
        if empty is not None:
            ok = yield from self.refill_sheaf(t, s, empty, flags)
            if ok:
                full = empty
            else:
                yield from self.sheaf_flush_unused(t, s, empty)
                self.free_empty_sheaf(t, s, empty)
        else:
            full = yield from self.alloc_full_sheaf(t, s, flags)
        if full is None:
            return None
        assert self.pcs_trylock(t, s), "process context: local_lock cannot be contended"
        pcs = s.cpu_sheaves[t.cpu.id]  # type: ignore[index]
        if not pcs.main.objects:
            yield from self.barn_put_empty_sheaf(t, barn, pcs.main)
            pcs.main = full
            return pcs
        if pcs.spare is None:
            pcs.spare = full
            return pcs
        if not pcs.spare.objects:
            yield from self.barn_put_empty_sheaf(t, barn, pcs.spare)
            pcs.spare = full
            return pcs
        yield from self.barn_put_full_sheaf(t, barn, full)
        self.stat(t, s, BARN_PUT)
        return pcs

    # --- free -----------------------------------------------------------------------------------
    def free_to_pcs(self, t: Thread, s: SlubCache, obj: int) -> Gen:
        """free_to_pcs: under the local trylock push on the main sheaf, replacing it first when
        full (__pcs_replace_full_main); False sends the caller to do_slab_free."""
        assert s.cpu_sheaves is not None
        if not self.pcs_trylock(t, s):
            return False
        pcs = s.cpu_sheaves[t.cpu.id]
        if pcs.main.size >= s.sheaf_capacity:
            pcs = yield from self.pcs_replace_full_main(t, s, pcs)
            if pcs is None:
                return False
        pcs.main.objects.append(obj)
        s.transit -= 1
        t.charge("magazine_push")
        self.pcs_unlock(t, s)
        self.stat(t, s, FREE_PCS)
        return True

    def pcs_replace_full_main(self, t: Thread, s: SlubCache, pcs: SlubPercpuSheaves) -> Gen:
        """__pcs_replace_full_main (local lock held): without a spare, an empty barn sheaf
        becomes main (the full one the spare); a non-full spare swaps in; else the barn takes
        the full main for an empty one (BARN_PUT); over MAX_FULL_SHEAVES (BARN_PUT_FAIL) the
        full spare is flushed to the slabs and reused; with no empty sheaf in the barn a new
        one is allocated and installed by __pcs_install_empty_sheaf."""
        cap = s.sheaf_capacity
        while True:  # restart
            barn = s.node[t.cpu.node].barn
            assert barn is not None
            if pcs.spare is None:
                empty = yield from self.barn_get_empty_sheaf(t, barn)
                if empty is not None:
                    pcs.spare, pcs.main = pcs.main, empty
                    return pcs
            else:
                if pcs.spare.size < cap:
                    pcs.main, pcs.spare = pcs.spare, pcs.main
                    t.charge("list_op")
                    return pcs
                got = yield from self.barn_replace_full_sheaf(t, barn, pcs.main)
                if not isinstance(got, str):
                    self.stat(t, s, BARN_PUT)
                    pcs.main = got
                    return pcs
                if got == E2BIG:
                    self.stat(t, s, BARN_PUT_FAIL)
                    to_flush, pcs.spare = pcs.spare, None
                    self.pcs_unlock(t, s)
                    yield from self.sheaf_flush_unused(t, s, to_flush)
                    return (yield from self._got_empty(t, s, barn, to_flush))
            # alloc_empty: the kmalloc of a sheaf (GFP_NOWAIT) does not fail in the model, so
            # the seed's sheaf_flush_main fallback and its BARN_PUT_FAIL are not reached
            self.pcs_unlock(t, s)
            empty = self.alloc_empty_sheaf(t, s)
            return (yield from self._got_empty(t, s, barn, empty))

    def _got_empty(self, t: Thread, s: SlubCache, barn: NodeBarn, empty: SlabSheaf) -> Gen:
        """__pcs_replace_full_main's got_empty: re-take the local trylock (else give the empty
        sheaf to the barn and fail) and install the empty sheaf."""
        if not self.pcs_trylock(t, s):
            yield from self.barn_put_empty_sheaf(t, barn, empty)
            return None
        pcs = s.cpu_sheaves[t.cpu.id]  # type: ignore[index]
        yield from self.pcs_install_empty_sheaf(t, s, pcs, empty)
        return pcs

    def pcs_install_empty_sheaf(self, t: Thread, s: SlubCache, pcs: SlubPercpuSheaves,
                                empty: SlabSheaf) -> Gen:
        """__pcs_install_empty_sheaf (local lock held): the expected case makes the full main
        the spare; after a race the extra sheaf goes to the barn, limits ignored."""
        cap = s.sheaf_capacity
        if pcs.spare is None:
            pcs.spare, pcs.main = pcs.main, empty
            return
        barn = s.node[t.cpu.node].barn
        if pcs.main.size < cap:
            yield from self.barn_put_empty_sheaf(t, barn, empty)
            return
        if pcs.spare.size < cap:
            pcs.main, pcs.spare = pcs.spare, pcs.main
            yield from self.barn_put_empty_sheaf(t, barn, empty)
            return
        yield from self.barn_put_full_sheaf(t, barn, pcs.main)
        self.stat(t, s, BARN_PUT)
        pcs.main = empty

"""The SPL's emergency objects: spl_emergency_alloc / spl_emergency_free, used once a
cache is KMC_BIT_DEADLOCKED (seed 000, spl-kmem-cache.c)."""

from __future__ import annotations

import math

from policies.base import Gen
from policies.spl.structs import (
    EEXIST,
    ENOENT,
    ENOMEM,
    SplCache,
)
from simcore.cpu import Thread


class SplEmergency:
    """Emergency-object paths of SplPolicy."""

    # --- emergency objects ------------------------------------------------------------------
    def _tree_levels(self, skc: SplCache) -> int:
        return max(1, math.ceil(math.log2(len(skc.emergency) + 1)))

    def spl_emergency_alloc(self, t: Thread, skc: SplCache, flags: int) -> Gen:
        """spl_emergency_alloc: last chance on the partial list (-EEXIST), then a tracking node
        and a page allocation of the object's order, inserted into the emergency tree under
        skc_lock; counts skc_obj_total, skc_obj_emergency and its maximum."""
        irqf = yield from self.skc_lock_irqs_on(t, skc)
        empty = not skc.partial
        yield from self.skc_unlock_irqs_on(t, skc, irqf)
        if not empty:
            return -EEXIST, None
        t.charge("kmalloc")
        order = self._order(skc)
        obj = yield from self.machine.memory.alloc_pages(t, order, flags)
        if obj is None:
            return -ENOMEM, None
        irqf = yield from self.skc_lock_irqs_on(t, skc)
        t.charge("emergency_lookup", self._tree_levels(skc))
        skc.emergency[obj] = order
        skc.obj_total += 1
        skc.obj_emergency += 1
        if skc.obj_emergency > skc.obj_emergency_max:
            skc.obj_emergency_max = skc.obj_emergency
        yield from self.skc_unlock_irqs_on(t, skc, irqf)
        self.machine.metrics.event("emergency_alloc", cache=skc.name, cpu=t.cpu.id,
                                   outstanding=skc.obj_emergency)
        return 0, obj

    def spl_emergency_free(self, t: Thread, skc: SplCache, obj: int) -> Gen:
        """spl_emergency_free: find the object in the tree under skc_lock, unlink it and free
        its pages; -ENOENT if it is not an emergency object."""
        irqf = yield from self.skc_lock_irqs_on(t, skc)
        t.charge("emergency_lookup", self._tree_levels(skc))
        order = skc.emergency.pop(obj, None)
        if order is not None:
            skc.obj_emergency -= 1
            skc.obj_total -= 1
        yield from self.skc_unlock_irqs_on(t, skc, irqf)
        if order is None:
            return -ENOENT
        yield from self.machine.memory.free_pages(t, obj, order)
        t.charge("kmalloc")
        self.machine.metrics.event("emergency_free", cache=skc.name, cpu=t.cpu.id,
                                   outstanding=skc.obj_emergency)
        return 0

    def _order(self, skc: SplCache) -> int:
        """get_order(skc_obj_size)."""
        pages = -(-skc.spec.size // self.machine.memory.page_size)
        return max(0, (pages - 1).bit_length())


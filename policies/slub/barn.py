"""The per-node barn of the 6.18 sheaves patch (linux-6.18-slab-sheaves-patch.txt): full and
empty sheaves under the barn's spinlock, taken with spin_lock_irqsave; MAX_FULL_SHEAVES and
MAX_EMPTY_SHEAVES. barn_get_empty_sheaf, barn_put_empty_sheaf, barn_put_full_sheaf,
barn_replace_empty_sheaf, barn_replace_full_sheaf and barn_shrink. Bonwick's depot, in Linux:
a sheaf is a magazine, the barn a depot per NUMA node."""

from __future__ import annotations

from dataclasses import dataclass, field

from policies.base import Gen
from policies.slub.sheaf import SlabSheaf
from policies.slub.structs import E2BIG, ENOMEM, SlubCache
from simcore.cpu import Thread
from simcore.spinlock import SpinLock

MAX_FULL_SHEAVES = 10
"""barn_replace_full_sheaf refuses (-E2BIG) when the barn already holds this many full."""
MAX_EMPTY_SHEAVES = 10
"""Defined by the patch; no path in this version checks it (empty sheaves only move)."""


@dataclass(eq=False)
class NodeBarn:
    """struct node_barn: `sheaves_full[-1]` / `sheaves_empty[-1]` are the list heads."""

    node: int
    lock: SpinLock
    sheaves_full: list[SlabSheaf] = field(default_factory=list)
    sheaves_empty: list[SlabSheaf] = field(default_factory=list)

    @property
    def nr_full(self) -> int:
        return len(self.sheaves_full)

    @property
    def nr_empty(self) -> int:
        return len(self.sheaves_empty)


class SlubBarn:
    """Barn operations of SlubPolicy (each one barn->lock round trip, IRQs saved)."""

    def barn_get_empty_sheaf(self, t: Thread, barn: NodeBarn) -> Gen:
        """barn_get_empty_sheaf: the first empty sheaf, or None."""
        irqf = yield from barn.lock.lock_irqsave(t)
        empty = barn.sheaves_empty.pop() if barn.sheaves_empty else None
        if empty is not None:
            t.charge("list_op")
        yield from barn.lock.unlock_irqrestore(t, irqf)
        return empty

    def barn_put_empty_sheaf(self, t: Thread, barn: NodeBarn, sheaf: SlabSheaf) -> Gen:
        """barn_put_empty_sheaf: no limit check (undoing a race)."""
        irqf = yield from barn.lock.lock_irqsave(t)
        barn.sheaves_empty.append(sheaf)
        t.charge("list_op")
        yield from barn.lock.unlock_irqrestore(t, irqf)

    def barn_put_full_sheaf(self, t: Thread, barn: NodeBarn, sheaf: SlabSheaf) -> Gen:
        """barn_put_full_sheaf: no limit check (undoing a race or finishing a replace)."""
        irqf = yield from barn.lock.lock_irqsave(t)
        barn.sheaves_full.append(sheaf)
        t.charge("list_op")
        yield from barn.lock.unlock_irqrestore(t, irqf)

    def barn_replace_empty_sheaf(self, t: Thread, barn: NodeBarn, empty: SlabSheaf) -> Gen:
        """barn_replace_empty_sheaf: a full sheaf for `empty` if the barn has one (the empty
        limit is ignored: the number of sheaves does not change), else None."""
        irqf = yield from barn.lock.lock_irqsave(t)
        full = None
        if barn.sheaves_full:
            full = barn.sheaves_full.pop()
            barn.sheaves_empty.append(empty)
            t.charge("list_op", 2)
        yield from barn.lock.unlock_irqrestore(t, irqf)
        return full

    def barn_replace_full_sheaf(self, t: Thread, barn: NodeBarn, full: SlabSheaf) -> Gen:
        """barn_replace_full_sheaf: an empty sheaf for `full`; E2BIG when the barn holds
        MAX_FULL_SHEAVES full ones, ENOMEM when it has no empty one."""
        irqf = yield from barn.lock.lock_irqsave(t)
        if barn.nr_full >= MAX_FULL_SHEAVES:
            empty: SlabSheaf | str = E2BIG
        elif not barn.sheaves_empty:
            empty = ENOMEM
        else:
            empty = barn.sheaves_empty.pop()
            barn.sheaves_full.append(full)
            t.charge("list_op", 2)
        yield from barn.lock.unlock_irqrestore(t, irqf)
        return empty

    def barn_shrink(self, t: Thread, s: SlubCache, barn: NodeBarn) -> Gen:
        """barn_shrink: detach both lists under the lock, then flush every full sheaf to the
        slabs and free every sheaf."""
        irqf = yield from barn.lock.lock_irqsave(t)
        full, barn.sheaves_full = barn.sheaves_full, []
        empty, barn.sheaves_empty = barn.sheaves_empty, []
        t.charge("list_op", 2)
        yield from barn.lock.unlock_irqrestore(t, irqf)
        for sheaf in reversed(full):
            yield from self.sheaf_flush_unused(t, s, sheaf)
            self.free_empty_sheaf(t, s, sheaf)
        for sheaf in reversed(empty):
            self.free_empty_sheaf(t, s, sheaf)

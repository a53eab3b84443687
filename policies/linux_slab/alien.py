"""Linux SLAB NUMA alien caches (seed 003 mm/slab.c): cache_free_alien, __drain_alien_cache
(nodes > 1 only)."""

from __future__ import annotations

from policies.base import Gen
from policies.linux_slab.structs import ArrayCache, LinuxCache
from simcore.cpu import Thread


class SlabAlien:
    """Alien-cache paths of LinuxSlabPolicy."""

    # --- NUMA -------------------------------------------------------------------------------
    def cache_free_alien(self, t: Thread, c: LinuxCache, obj: int, nodeid: int) -> Gen:
        """cache_free_alien: node_frees++; push on this node's alien array for `nodeid`,
        draining it into that node first when full (node_overflow++)."""
        c.node_frees += 1
        alien = c.nodelists[t.cpu.node].alien.get(nodeid)
        if alien is None:
            rl3 = c.nodelists[nodeid]
            yield from rl3.list_lock.lock(t)
            self.landed(c)
            victims = self.free_block(t, c, [obj], nodeid)
            yield from rl3.list_lock.unlock(t)
            yield from self._destroy_after_unlock(t, c, victims)
            return
        assert alien.lock is not None
        yield from alien.lock.lock(t)
        if alien.avail == alien.limit:
            c.node_overflow += 1
            yield from self.drain_alien_cache(t, c, alien, nodeid)
        alien.entry.append(obj)
        self.landed(c)
        t.charge("magazine_push")
        yield from alien.lock.unlock(t)

    def drain_alien_cache(self, t: Thread, c: LinuxCache, alien: ArrayCache, node: int) -> Gen:
        """__drain_alien_cache (seed 003 973, alien lock held): under the remote list_lock, as
        much as fits into the remote shared array (newest first; transfer_objects marks it
        touched only when it moved objects), the rest to free_block."""
        if not alien.avail:
            return
        rl3 = c.nodelists[node]
        yield from rl3.list_lock.lock(t)
        if rl3.shared is not None:
            self.transfer_objects(t, rl3.shared, alien, alien.limit)
        victims = self.free_block(t, c, list(alien.entry), node)
        alien.entry.clear()
        yield from rl3.list_lock.unlock(t)
        yield from self._destroy_after_unlock(t, c, victims)


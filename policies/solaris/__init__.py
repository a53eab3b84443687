"""`solaris`: illumos kmem. `SolarisPolicy` is assembled in `policy.py` from modules named after
kmem.c's layers: `cpu_cache` (kmem_cache_alloc / kmem_cache_free on the CPU layer), `depot`
(kmem_depot_alloc / kmem_depot_free, the working set), `magazine` (magazines and magtypes),
`slab_layer` (kmem_slab_alloc / kmem_slab_free), `slab` (slab structures and geometry),
`update` (kmem_update, resizing, reaping), `consolidator` (kmem_move_buffers and the move
callbacks), `cache` (kmem_cache_t) and `kmastat` (::kmastat, ::kmem_slabs, kstats)."""

from policies.solaris.policy import SolarisPolicy

__all__ = ["SolarisPolicy"]

"""/proc/spl/kmem/slab as OpenZFS's spl-proc.c prints it (slab_seq_show_headers /
slab_seq_show; column meanings in reference section C4).

One line per cache: name, skc_flags in hex, slab bytes (slab size x skc_slab_total), allocated
bytes (object size x skc_obj_alloc), slab size, object size, then the slab group
(skc_slab_total / alloc / max), the object group (skc_obj_total / alloc / max) and the emergency
group (skc_obj_deadlock / skc_obj_emergency / skc_obj_emergency_max). KMC_SLAB caches show only
the allocated bytes, the object size and the allocated objects (skc_linux_alloc); every other
column is "-".
"""

from __future__ import annotations

from typing import Any

HEADER = (
    "--------------------- cache -------------------------------------------------------  "
    "----- slab ------  ---- object -----  --- emergency ---\n"
    "name                                    flags      size     alloc slabsize  objsize  "
    "total alloc   max  total alloc   max  dlock alloc   max\n"
)


def format_spl_slab(policy: Any, caches: list[Any]) -> str:
    """The whole file for `caches` of an `SplPolicy`."""
    lines = [HEADER]
    for skc in caches:
        name = f"{skc.name:<36}  "
        if skc.is_slab:
            lines.append(
                name + f"0x{skc.flags.value:05x} {'-':>9} {skc.spec.size * skc.linux_alloc:9d} "
                f"{'-':>8} {skc.spec.size:8d}  {'-':>5} {'-':>5} {'-':>5}  {'-':>5} "
                f"{skc.linux_alloc:5d} {'-':>5}  {'-':>5} {'-':>5} {'-':>5}\n")
            continue
        geo = skc.geo
        lines.append(
            name + f"0x{skc.flags.value:05x} {geo.slab_size * skc.slab_total:9d} "
            f"{skc.spec.size * skc.obj_alloc:9d} {geo.slab_size:8d} {skc.spec.size:8d}  "
            f"{skc.slab_total:5d} {skc.slab_alloc:5d} {skc.slab_max:5d}  "
            f"{skc.obj_total:5d} {skc.obj_alloc:5d} {skc.obj_max:5d}  "
            f"{skc.obj_deadlock:5d} {skc.obj_emergency:5d} {skc.obj_emergency_max:5d}\n")
    return "".join(lines)

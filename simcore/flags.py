"""Allocation flags shared by every policy, named as the kernels name them.

The SPL's KM_* flags are the vocabulary of workloads; the Linux model maps KM_SLEEP to
GFP_KERNEL and KM_NOSLEEP to GFP_ATOMIC.
"""

KM_SLEEP = 0x0000
"""May sleep: growth may wait, direct reclaim may run (GFP_KERNEL)."""
KM_NOSLEEP = 0x0001
"""Must not sleep (GFP_ATOMIC); interrupt handlers use it."""
KM_PUSHPAGE = 0x0004
"""May sleep and dip into reserves: GFP_KERNEL | __GFP_HIGH in the modern SPL
(kmem_flags_convert). The old SPL (2012) also made it GFP_NOIO; a policy modelling that era
adds KM_NOIO itself."""
KM_NOFS = 0x0010
"""No file-system re-entry from reclaim (GFP_NOFS)."""
KM_NOIO = 0x0020
"""No I/O and no file-system re-entry from reclaim (GFP_NOIO)."""

GFP_KERNEL = KM_SLEEP
GFP_ATOMIC = KM_NOSLEEP

NAMES = {"KM_SLEEP": KM_SLEEP, "KM_NOSLEEP": KM_NOSLEEP, "KM_PUSHPAGE": KM_PUSHPAGE,
         "KM_NOFS": KM_NOFS, "KM_NOIO": KM_NOIO, "GFP_KERNEL": GFP_KERNEL, "GFP_ATOMIC": GFP_ATOMIC}


def can_sleep(flags: int) -> bool:
    """True when the request may block (not KM_NOSLEEP / GFP_ATOMIC)."""
    return not flags & KM_NOSLEEP


def parse(names: list[str] | str) -> int:
    """Flag value for a name or list of names; raises KeyError for an unknown name."""
    if isinstance(names, str):
        names = [names]
    value = 0
    for n in names:
        value |= NAMES[n]
    return value

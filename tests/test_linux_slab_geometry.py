"""linux_slab geometry against an independent derivation from seed 003 (Linux 2.6.17 mm/slab.c):
kmem_cache_create (2040-2160), cache_estimate (758-814) and calculate_slab_order (1808-1863),
for every object size 32..8192 in steps of 8, with and without SLAB_HWCACHE_ALIGN.

The derivation below is written from the seed's text, not from the model: the on-slab object
count is found by search (the largest n whose aligned descriptor plus n objects fit), which is
what cache_estimate's guess-and-correct arithmetic computes."""

from __future__ import annotations

import pytest

from policies.linux_slab.geometry import geometry

PAGE = 4096
BUFCTL = 4      # sizeof(kmem_bufctl_t)
LINE = 64       # cache_line_size()
WORD = 8        # BYTES_PER_WORD
MAX_ORDER = 5   # MAX_GFP_ORDER on MMU systems
BREAK = 1       # slab_break_gfp_order with more than 32 MiB of RAM


def ceil_to(n: int, a: int) -> int:
    return (n + a - 1) // a * a


def derive(size: int, hw: bool, debug: bool = False, word: int = WORD) -> tuple:
    """(buffer_size, align, order, num, off_slab, slab_size, colour) from the seed's rules;
    `word` is BYTES_PER_WORD (struct slab: 48 bytes on 64-bit, 28 on 32-bit)."""
    desc = 48 if word == 8 else 28
    rz = debug and (size < 4096 or (size - 1).bit_length() == (size - 1 + 3 * word).bit_length())
    size = ceil_to(size, word)                      # 2040-2042
    align = word
    if hw:                                          # 2048-2056
        align = LINE
        while size <= align // 2:
            align //= 2
    if rz:                                          # 2086-2100: red zone and user word
        align = word
        size += 3 * word
    off = size >= PAGE // 8                         # 2112: before ALIGN
    size = ceil_to(size, align)                     # 2119
    chosen = None
    for order in range(MAX_ORDER + 1):              # calculate_slab_order
        total = PAGE << order
        if off:
            num = total // size
            left = total - num * size
        else:
            num = 0
            while ceil_to(desc + BUFCTL * (num + 1), align) + (num + 1) * size <= total:
                num += 1
            left = total - num * size - (ceil_to(desc + BUFCTL * num, align) if num else 0)
        if num == 0:
            continue
        if off and num > (size - desc) // BUFCTL:   # 1829-1833
            break
        chosen = (order, num, left)
        if order >= BREAK or left * 8 <= total:     # 1853, 1859
            break
    order, num, left = chosen
    mgmt = ceil_to(desc + BUFCTL * num, align)      # 2129
    if off and left >= mgmt:                        # 2136-2139
        off = False
        left -= mgmt
    if off:
        mgmt = desc + BUFCTL * num                  # 2143-2144
    colour = left // max(LINE, align)               # 2147-2151
    return size, align, order, num, off, mgmt, colour


def model(size: int, hw: bool, debug: bool = False, word: int = WORD) -> tuple:
    g = geometry(size, 0, hwcache_align=hw, debug=debug, word=word)
    return g.buffer_size, g.align, g.gfporder, g.num, g.off_slab, g.slab_size, g.colour


@pytest.mark.parametrize("hw", [False, True], ids=["plain", "SLAB_HWCACHE_ALIGN"])
def test_every_size_32_to_8192_step_8_matches_the_seed(hw):
    """Acceptance 2 (seed 003 2112 before 2119, cache_estimate 758, calculate_slab_order
    1808)."""
    bad = [(s, model(s, hw), derive(s, hw)) for s in range(32, 8193, 8)
           if model(s, hw) != derive(s, hw)]
    assert not bad, bad[:5]


def test_review_item1_456_byte_aligned_object_is_on_slab():
    """Seed 003 2112: 456 < PAGE_SIZE/8 is tested before ALIGN(456, 64) = 512 (2119), so the
    descriptor stays on-slab: 7 objects, 384 bytes left, 6 colours."""
    g = geometry(456, hwcache_align=True)
    assert (g.buffer_size, g.off_slab, g.num, g.leftover, g.colour) == (512, False, 7, 384, 6)
    for size in range(449, 505):  # word-rounded below 512
        assert not geometry(size, hwcache_align=True).off_slab


@pytest.mark.parametrize("hw", [False, True], ids=["plain", "SLAB_HWCACHE_ALIGN"])
def test_debug_build_geometry_matches_the_seed(hw):
    """CONFIG_DEBUG_SLAB (seed 003 2018-2019, 2086-2100): red zone and user words, word
    alignment, every size 32..8192 step 8."""
    bad = [s for s in range(32, 8193, 8) if model(s, hw, True) != derive(s, hw, True)]
    assert not bad, bad[:5]


@pytest.mark.parametrize("hw", [False, True], ids=["plain", "SLAB_HWCACHE_ALIGN"])
def test_review_item7_32_bit_geometry_uses_4_byte_words_and_a_28_byte_slab(hw):
    """Review item 7: with sizeof_pointer = 4, BYTES_PER_WORD (137) and sizeof(struct slab)
    change too; every size 32..8192 step 8 against the derivation, and size-32 aligned holds
    (4096 - 28) / 36 = 113 objects (112 on 64-bit)."""
    bad = [s for s in range(32, 8193, 8) if model(s, hw, word=4) != derive(s, hw, word=4)]
    assert not bad, bad[:5]
    if hw:
        assert geometry(32, 0, True, word=4).num == 113

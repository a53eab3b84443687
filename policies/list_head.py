"""A kernel `list_head` of slabs, shared by the policies whose slab lists are list_heads (the SPL's
skc_partial_list / skc_complete_list, Linux SLAB's slabs_partial / slabs_full / slabs_free).
A slab on such a list carries `prev`, `next` and `on` (the list it is on)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


class SlabList:
    """A list_head of slabs: list_add (head), list_add_tail, list_del, list_move and
    list_move_tail in O(1)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.head: Any = None
        self.tail: Any = None
        self.count = 0

    def __len__(self) -> int:
        return self.count

    def __bool__(self) -> bool:
        return self.head is not None

    def __iter__(self) -> Iterator[Any]:
        s = self.head
        while s is not None:
            nxt = s.next
            yield s
            s = nxt

    def reversed(self) -> Iterator[Any]:
        s = self.tail
        while s is not None:
            prv = s.prev
            yield s
            s = prv

    def add(self, s: Any) -> None:
        """list_add: insert at the head."""
        s.prev, s.next, s.on = None, self.head, self
        if self.head is not None:
            self.head.prev = s
        else:
            self.tail = s
        self.head = s
        self.count += 1

    def add_tail(self, s: Any) -> None:
        """list_add_tail: insert at the tail."""
        s.prev, s.next, s.on = self.tail, None, self
        if self.tail is not None:
            self.tail.next = s
        else:
            self.head = s
        self.tail = s
        self.count += 1

    def _unlink(self, s: Any) -> None:
        """__list_del: take `s` out of this list (its own links are left as they were)."""
        prv, nxt = s.prev, s.next
        if prv is not None:
            prv.next = nxt
        else:
            self.head = nxt
        if nxt is not None:
            nxt.prev = prv
        else:
            self.tail = prv
        self.count -= 1

    def remove(self, s: Any) -> None:
        """list_del."""
        self._unlink(s)
        s.prev = s.next = s.on = None

    def move(self, s: Any) -> None:
        """list_move: list_del from the list `s` is on, then list_add at this list's head (the
        two in one body: the slab paths move a slab per object at large sizes)."""
        old = s.on
        prv = s.prev
        nxt = s.next
        if prv is None:
            old.head = nxt
        else:
            prv.next = nxt
        if nxt is None:
            old.tail = prv
        else:
            nxt.prev = prv
        old.count -= 1
        head = self.head
        s.prev = None
        s.next = head
        s.on = self
        if head is None:
            self.tail = s
        else:
            head.prev = s
        self.head = s
        self.count += 1

    def move_tail(self, s: Any) -> None:
        """list_move_tail: list_del from the list `s` is on, then list_add_tail on this list
        (the two in one body, as `move`)."""
        old = s.on
        prv = s.prev
        nxt = s.next
        if prv is None:
            old.head = nxt
        else:
            prv.next = nxt
        if nxt is None:
            old.tail = prv
        else:
            nxt.prev = prv
        old.count -= 1
        tail = self.tail
        s.prev = tail
        s.next = None
        s.on = self
        if tail is None:
            self.head = s
        else:
            tail.next = s
        self.tail = s
        self.count += 1

    def move_first(self, src: SlabList, n: int) -> None:
        """`n` times list_move(src->next, this list): the first `n` slabs of `src` (n <= its
        length, `src` not this list) move one after another to this list's head, so they end
        up at its head in reverse order, the last moved first. One walk over the `n` slabs
        instead of `n` moves (a refill empties a run of slabs from the head of a list)."""
        if n <= 0:
            return
        first = s = src.head
        head = self.head
        prev = head
        for _ in range(n):
            nxt = s.next
            s.next = prev
            s.prev = nxt
            s.on = self
            prev = s
            s = nxt
        # `prev` is the last slab moved (the new head), `s` the first left on `src`
        prev.prev = None
        if head is None:
            self.tail = first
        else:
            head.prev = first
        self.head = prev
        self.count += n
        src.head = s
        if s is None:
            src.tail = None
        else:
            s.prev = None
        src.count -= n

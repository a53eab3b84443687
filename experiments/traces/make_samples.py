"""Write the sample traces in this folder (run from the repository root:
`python experiments/traces/make_samples.py`). Deterministic: the same files every time.

The pattern is a small network receive path: CPUs 0 and 1 take interrupts that allocate
socket buffers (`skbuff_head_cache`, 256 B, GFP_ATOMIC) and data (`kmalloc-1024`), which the
application threads on CPUs 2 and 3 free after a short delay; meanwhile every CPU churns
`dentry` objects (192 B) with short lifetimes. The same event stream is written as CSV and as
`trace-cmd report` text; `sample-latency.ftrace.txt` is the same stream as trace_pipe prints it
on a kernel that names the cache only on frees: no `name=` on `kmem_cache_alloc`, and the
5-character latency flags (`d.h2.` for the interrupt handlers' allocations, `..s1.` for the
softirq frees of socket buffers, `d...1` for the kfrees made with IRQs off, `.....` otherwise).
"""

from __future__ import annotations

import random
from pathlib import Path

HERE = Path(__file__).parent
EVENTS = 1200


def events() -> list[tuple[int, int, str, str, int, str, str]]:
    """(time_ns, cpu, op, cache, size, pointer, kind) in time order."""
    rng = random.Random(20261201)
    out = []
    live: list[tuple[int, int, str, int, str, str]] = []  # (free time, cpu, cache, size, ptr)
    ptrs = iter(range(0xFFFF888100000000, 0xFFFF888200000000, 0x400))
    t = 1_000_000
    while len(out) < EVENTS:
        t += rng.randint(200, 3000)
        due = [x for x in live if x[0] <= t]
        for x in sorted(due):
            live.remove(x)
            out.append((x[0], x[1], "free", x[2], x[3], x[4], x[5]))
        r = rng.random()
        if r < 0.4:
            cpu = rng.choice([0, 1])
            ptr = f"{next(ptrs):#x}"
            out.append((t, cpu, "alloc", "skbuff_head_cache", 256, ptr, "cache"))
            live.append((t + rng.randint(5_000, 40_000), rng.choice([2, 3]),
                         "skbuff_head_cache", 256, ptr, "cache"))
            ptr = f"{next(ptrs):#x}"
            out.append((t + 150, cpu, "alloc", "kmalloc-1024", 1024, ptr, "kmalloc"))
            live.append((t + rng.randint(5_000, 40_000), rng.choice([2, 3]),
                         "kmalloc-1024", 1024, ptr, "kmalloc"))
        else:
            cpu = rng.randrange(4)
            ptr = f"{next(ptrs):#x}"
            out.append((t, cpu, "alloc", "dentry", 192, ptr, "cache"))
            live.append((t + rng.randint(2_000, 20_000), cpu, "dentry", 192, ptr, "cache"))
    for x in sorted(live):
        out.append((x[0], x[1], "free", x[2], x[3], x[4], x[5]))
    out.sort(key=lambda e: (e[0], e[1]))
    return out


def write_csv(evs: list) -> None:
    lines = ["time_ns,cpu,op,cache,size,object"]
    for t, cpu, op, cache, size, ptr, _kind in evs:
        lines.append(f"{t},{cpu},{op},{cache if op == 'alloc' else ''},"
                     f"{size if op == 'alloc' else ''},{ptr}")
    (HERE / "sample.csv").write_text("\n".join(lines) + "\n")


def write_ftrace(evs: list) -> None:
    tasks = {0: "<idle>-0", 1: "<idle>-0", 2: "nginx-4242", 3: "nginx-4243"}
    lines = ["cpus=4"]
    for t, cpu, op, cache, size, ptr, kind in evs:
        sec, ns = divmod(t + 5_123_000_000_000, 1_000_000_000)
        head = f"{tasks[cpu]:>16} [{cpu:03d}] {sec}.{ns // 1000:06d}:"
        if op == "alloc" and kind == "cache":
            gfp = "GFP_ATOMIC|__GFP_NOWARN" if cache == "skbuff_head_cache" else "GFP_KERNEL"
            site = "__alloc_skb+0x4e" if cache == "skbuff_head_cache" else "d_alloc+0x2a"
            lines.append(f"{head} kmem_cache_alloc:     call_site={site} ptr={ptr} "
                         f"bytes_req={size} bytes_alloc={size} gfp_flags={gfp} node=-1 "
                         f"accounted=false name={cache}")
        elif op == "alloc":
            lines.append(f"{head} kmalloc:              call_site=__alloc_skb+0x8b ptr={ptr} "
                         f"bytes_req=1000 bytes_alloc={size} gfp_flags=GFP_ATOMIC|__GFP_NOWARN "
                         "node=-1 accounted=false")
        elif kind == "cache":
            lines.append(f"{head} kmem_cache_free:      call_site=kfree_skbmem+0x2e ptr={ptr} "
                         f"name={cache}")
        else:
            lines.append(f"{head} kfree:                call_site=skb_release_data+0x12c "
                         f"ptr={ptr}")
    (HERE / "sample.ftrace.txt").write_text("\n".join(lines) + "\n")


def write_latency(evs: list) -> None:
    tasks = {0: "<idle>-0", 1: "<idle>-0", 2: "nginx-4242", 3: "nginx-4243"}
    lines = []
    for t, cpu, op, cache, size, ptr, kind in evs:
        sec, ns = divmod(t + 5_123_000_000_000, 1_000_000_000)
        if op == "alloc" and cache != "dentry":
            flags = "d.h2."
        elif op == "free" and cache == "skbuff_head_cache":
            flags = "..s1."
        elif op == "free" and kind == "kmalloc":
            flags = "d...1"
        else:
            flags = "....."
        head = f"{tasks[cpu]:>16} [{cpu:03d}] {flags} {sec}.{ns // 1000:06d}:"
        if op == "alloc" and kind == "cache":
            gfp = "GFP_ATOMIC|__GFP_NOWARN" if cache == "skbuff_head_cache" else "GFP_KERNEL"
            site = "__alloc_skb+0x4e" if cache == "skbuff_head_cache" else "d_alloc+0x2a"
            lines.append(f"{head} kmem_cache_alloc: call_site={site} ptr={ptr} "
                         f"bytes_req={size} bytes_alloc={size} gfp_flags={gfp} node=-1 "
                         "accounted=false")
        elif op == "alloc":
            lines.append(f"{head} kmalloc: call_site=__alloc_skb+0x8b ptr={ptr} "
                         f"bytes_req=1000 bytes_alloc={size} gfp_flags=GFP_ATOMIC|__GFP_NOWARN "
                         "node=-1 accounted=false")
        elif kind == "cache":
            lines.append(f"{head} kmem_cache_free: call_site=kfree_skbmem+0x2e ptr={ptr} "
                         f"name={cache}")
        else:
            lines.append(f"{head} kfree: call_site=skb_release_data+0x12c ptr={ptr}")
    (HERE / "sample-latency.ftrace.txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    evs = events()
    write_csv(evs)
    write_ftrace(evs)
    write_latency(evs)

"""The figures of `kmemsim validate`: one per check whose result is a series or a comparison
worth seeing (matplotlib figures; experiments.validation writes them as
validation-<check>.png next to the table)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def resize_figure(runs: Sequence[Any], check: Any) -> Any:
    """Magazine size and failed depot try-locks per second at every kmem_update, one panel
    per CPU count, with the paper's 1/s and the rule's 4-per-interval lines."""
    prm = check.params
    fig, axes = plt.subplots(len(runs), 1, figsize=(8.0, 3.0 * len(runs)), sharex=True,
                             squeeze=False)
    for ax, r in zip(axes[:, 0], runs, strict=True):
        rates = r.rates()
        t = [0.0] + [x for x, _ in rates]
        rate = [y for _, y in rates]
        ax.stairs(rate, t, color="tab:red", linewidth=1.6,
                  label="depot contention (failed try-locks / s, per interval)")
        ax.axhline(1.0, color="tab:red", linestyle="--", linewidth=0.9,
                   label="B&A 2001: below 1 / s once stabilised")
        interval = t[1] - t[0] if len(t) > 1 else 15.0
        ax.axhline((r.threshold + 1) / interval, color="grey", linestyle=":", linewidth=0.9,
                   label=f"resize trigger: > {r.threshold} in one interval "
                   f"(~{(r.threshold + 1) / interval:.2f} / s)")
        ax.set_yscale("symlog", linthresh=0.1)
        ax.set_ylabel("failed try-locks / s")
        ax.set_title(f"{r.cpus} CPUs: kmem_alloc_{prm['object_size']}, "
                     f"{1e9 / prm['arrival_mean_ns'] * prm['batch']:,.0f} allocs/s per CPU")
        ax2 = ax.twinx()
        ax2.step(t, [r.start_magsize] + r.sizes_after(), where="post", color="tab:blue",
                 linewidth=1.6, label="magazine size after the update's resize")
        ax2.set_ylabel("magazine size (rounds)", color="tab:blue")
        ax2.set_ylim(0, max([r.start_magsize] + r.sizes_after()) * 1.25)
    handles = axes[0, 0].get_legend_handles_labels()
    handles2 = ax2.get_legend_handles_labels()
    fig.legend(handles[0] + handles2[0], handles[1] + handles2[1], fontsize=8, ncols=2,
               loc="lower center", bbox_to_anchor=(0.5, -0.02))
    axes[-1, 0].set_xlabel("simulated time (s); one step per kmem_update (15 s)")
    fig.suptitle("Magazine resizing at the real 15 s kmem_update (Bonwick & Adams 2001, 3.6)")
    fig.tight_layout(rect=(0, 0.07 * 2 / len(runs), 1, 1))
    return fig


def hackbench_figure(rows: Sequence[dict[str, Any]]) -> Any:
    """Per configuration: messages per simulated second, and lock wait on list_lock and
    barn_lock as a share of all CPU time."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10.0, 3.6))
    labels = [r["label"] for r in rows]
    y = range(len(rows))
    ax1.barh(y, [r["messages_per_s"] / 1e6 for r in rows], color="tab:blue")
    ax1.set_yticks(list(y), labels, fontsize=8)
    ax1.invert_yaxis()
    ax1.set_xlabel("messages per simulated second (millions)")
    ax1.set_title("throughput (hackbench time is its inverse)")
    list_wait = [100 * r["list_lock_share"] for r in rows]
    barn_wait = [100 * r["barn_lock_share"] for r in rows]
    ax2.barh(y, list_wait, color="tab:red", label="node list_lock")
    ax2.barh(y, barn_wait, left=list_wait, color="tab:orange", label="barn_lock (sheaves)")
    ax2.set_yticks(list(y), [""] * len(rows))
    ax2.invert_yaxis()
    ax2.set_xlabel("lock wait, % of all CPU time")
    ax2.set_title("spinning on the shared SLUB locks")
    ax2.legend(fontsize=8)
    fig.suptitle("hackbench-like send/receive on SLUB: per-CPU partial lists and sheaves")
    fig.tight_layout()
    return fig


def microbenchmark_figure(values: dict[str, float], cpus: int) -> Any:
    """Alloc+free pairs per second at 1 and `cpus` CPUs, magazines against the original
    allocator, beside the paper's numbers (log scale)."""
    fig, ax = plt.subplots(figsize=(7.0, 3.6))
    groups = ["1 CPU", f"{cpus} CPUs"]
    x = [0.0, 1.0]
    w = 0.2
    series = [
        ("magazines, model", values["mag1"], values["magn"], "tab:blue", None),
        ("magazines, paper", 1e9 / 356, 16 * 1e9 / 356, "tab:blue", "//"),
        ("original, model", values["orig1"], values["orign"], "tab:red", None),
        ("original, paper", 1e9 / 743, 16 * 1e9 / 356 / 340, "tab:red", "//"),
    ]
    for k, (label, one, many, color, hatch) in enumerate(series):
        ax.bar([xi + (k - 1.5) * w for xi in x], [one / 1e6, many / 1e6], w, label=label,
               color=color if hatch is None else "white", edgecolor=color, hatch=hatch)
    ax.set_xticks(x, groups)
    ax.set_yscale("log")
    ax.set_ylabel("alloc+free pairs per second (millions)")
    ax.set_title("Bonwick & Adams 2001 microbenchmark: magazines vs the original slab allocator",
                 fontsize=10)
    ax.legend(fontsize=8, ncols=2)
    fig.tight_layout()
    return fig


def grow_wait_figure(waits: dict[str, tuple[list[int], list[int]]], fast_ns: int) -> Any:
    """Cumulative share of growth waits (spl_cache_grow's wait_event_timeout) by length, per
    variant, with the report's 64 us and 100 ms marks."""
    fig, ax = plt.subplots(figsize=(7.0, 3.6))
    for name, (hi, count) in waits.items():
        total = sum(count)
        if not total:
            continue
        pairs = sorted(zip(hi, count, strict=True))
        run, xs, ys = 0, [], []
        for h, c in pairs:
            run += c
            xs.append(h / 1e3)
            ys.append(run / total)
        ax.step(xs, ys, where="post", linewidth=1.6, label=f"{name} ({total:,} waits)")
    ax.axvline(fast_ns / 1e3, color="grey", linestyle="--", linewidth=0.9,
               label="64 us (report: 99.5 % of calls below)")
    ax.axvline(100_000, color="tab:red", linestyle=":", linewidth=0.9,
               label="100 ms (HZ/10 timeout)")
    ax.set_xscale("log")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("growth wait (us, log scale)")
    ax.set_ylabel("share of waits this short or shorter")
    ax.set_title("zfs#9989: spl_cache_grow waits before and after 2adc6b35", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig

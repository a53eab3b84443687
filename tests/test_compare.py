"""kmemsim compare: runs grouped by settings (only seeds averaged) with labels from what
differs, every figure with the expected axes and series (checked on the figure objects), the
HTML report with each configuration's settings, the per-workload x per-cache table, failed
points, every figure and text report, rendered by headless Chromium; and the small scalability
experiment has Bonwick & Adams' shape."""

from __future__ import annotations

import tomllib
from pathlib import Path

import browser
import matplotlib.pyplot as plt
import pytest

from experiments import compare as cmp
from experiments.cli import main
from experiments.compare_figures import FIGURES, figures, memory_split
from experiments.compare_html import render_html
from experiments.sweep import run_sweep

POLICIES = ["global_lock", "spl", "solaris", "linux_slab", "slub"]


@pytest.fixture(scope="module")
def demo_sweep(tmp_path_factory) -> Path:
    """The demo experiment, shortened, on 2 and 4 CPUs-per-node variants."""
    d = tmp_path_factory.mktemp("demo")
    text = Path("experiments/configs/demo.toml").read_text()
    raw = tomllib.loads(text)
    assert raw["sweep"]["policy"] == POLICIES
    text = text.replace('duration = "30ms"', 'duration = "6ms"')
    text = text.replace('policy = ["global_lock", "spl", "solaris", "linux_slab", "slub"]',
                        'policy = ["global_lock", "spl", "solaris", "linux_slab", "slub"]\n'
                        'cpus = [16, 20]')
    for a, b in (('"8ms"', '"2ms"'), ('"4ms"', '"1ms"'), ('"18ms"', '"3ms"')):
        text = text.replace(f"duration = {a}", f"duration = {b}")
    f = d / "demo.toml"
    f.write_text(text)
    df = run_sweep(f, d / "sweep", jobs=2, progress=False)
    assert set(df.status) == {"ok"} and len(df) == 10
    return d / "sweep"


@pytest.fixture(scope="module")
def demo_report(demo_sweep: Path, tmp_path_factory) -> Path:
    """`kmemsim compare` of the demo sweep (its output folder)."""
    out = tmp_path_factory.mktemp("cmp")
    assert main(["compare", str(demo_sweep), "--out", str(out)]) == 0
    return out


def test_figures_have_expected_axes_and_series(demo_sweep: Path) -> None:
    runs = cmp.load_inputs([demo_sweep])
    assert len(runs) == 10
    groups = cmp.group_runs(runs)
    assert len(groups) == 10 and all(len(g.runs) == 1 for g in groups)
    figs = figures(groups)
    assert list(figs) == list(FIGURES)
    reps = cmp.representatives(groups)
    assert [r.policy for r in reps] == POLICIES and all(r.cpus == 20 for r in reps)
    assert [r.label for r in reps] == [f"{p} 20 CPUs" for p in POLICIES]

    lw = figs["lock_wait"].axes
    assert [a.get_title() for a in lw] == [f"{p} 20 CPUs: lock wait" for p in POLICIES]
    assert len({a.get_ylim() for a in lw}) == 1  # shared y-axis
    for a, run in zip(lw, reps, strict=True):
        assert a.get_xlabel() == "simulated time (ms)"
        labels = [ln.get_label() for ln in a.lines]
        waits = {k: v["waittime_total_ns"] for k, v in run.summary["locks"].items()}
        names = [lbl.split(" (")[0] for lbl in labels]
        # Ranked and labelled by the same measure (total wait), never a class that never waited.
        assert [waits[n] for n in names] == sorted((waits[n] for n in names), reverse=True)
        assert all(waits[n] > 0 for n in names)
        for lbl, n in zip(labels, names, strict=True):
            assert lbl == f"{n} ({waits[n] / 1e6:,.3f} ms wait)"
    solaris_locks = [ln.get_label() for ln in lw[POLICIES.index("solaris")].lines]
    assert any("->cache_depot_lock" in lbl for lbl in solaris_locks)
    # every cache's lock is named by its cache; only machine-wide locks have no cache
    machine_wide = ("vmap_area_lock", "vmem_lock", "kmem_cache_lock", "cache_chain_mutex",
                    "flush_lock")
    assert all("->" in lbl for a in lw for lbl in (ln.get_label() for ln in a.lines)
               if not lbl.startswith(machine_wide))

    alloc_ax, free_ax = figs["latency_tail"].axes
    for a in (alloc_ax, free_ax, figs["irq_off"].axes[0]):
        assert a.get_xscale() == "log" and a.get_yscale() == "log"
    legend = [t.get_text() for t in alloc_ax.get_legend().get_texts()]
    assert legend[:len(reps)] == [r.label for r in reps] and "p99.9" in legend
    assert any(t.startswith("max") for t in legend)
    # p99.9 and max marked on every curve: the markers sit at the summary's values.
    for run in reps:
        q = run.summary["latency"]["latency.alloc"]
        xs = {float(x) for ln in alloc_ax.lines for x in ln.get_xdata()}
        assert float(q["p99.9"]) in xs and float(q["max"]) in xs

    mem = figs["memory"].axes
    assert len(mem) == len(POLICIES)
    for ax, pol in zip(mem, POLICIES, strict=True):
        assert ax.get_title() == f"{pol} 20 CPUs: memory held by cache"
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert sorted(lb for lb in labels if lb.startswith("held: ")) == [
            "held: arc_buf_hdr_t", "held: dnode_t", "held: zio_buf_32768", "held: zio_buf_4096"]
        assert "requested by live objects (all caches)" in labels
        assert any(lb.startswith("growth (") for lb in labels)
        assert {t.get_text().strip() for t in ax.texts} >= {"warm", "burst", "idle"}

    ratio, split = figs["fragmentation"].axes
    assert [ln.get_label() for ln in ratio.lines if not ln.get_label().startswith("_")] == [
        r.label for r in reps]
    assert [t.get_text() for t in split.get_yticklabels()] == [r.label for r in reps]

    tp, lwait = figs["scaling"].axes
    assert tp.get_xlabel() == "CPUs" and "simulated second" in tp.get_ylabel()
    assert "%" in lwait.get_ylabel()

    summ = figs["summary"].axes
    assert len(summ) == 6
    for a in summ:
        assert [t.get_text() for t in a.get_xticklabels()] == [g.label for g in groups]
        assert a.get_ylabel()
    for f in figs.values():
        assert f._suptitle is not None
        plt.close(f)


def test_fragmentation_split_accounts_for_objects_in_magazines(demo_sweep: Path) -> None:
    """Solaris keeps freed objects in magazines and the depot: the split counts them as cached
    (objs_cached x object size), so held = requested + free + cached + the rest."""
    runs = cmp.load_inputs([demo_sweep])
    groups = cmp.group_runs(runs)
    for g in groups:
        run = g.representative
        split = memory_split(run, g)
        caches = run.summary["caches"]
        held = sum(c["bytes_total"] for c in caches.values()) / 2**20
        assert abs(sum(split.values()) - held) < 1e-6 * max(held, 1)
        sizes = {c["name"]: c["size"] for c in g.config["caches"]}
        cached = sum(c["objs_cached"] * sizes[n] for n, c in caches.items()) / 2**20
        assert abs(split["cached: per-CPU layers, depots"] - cached) < 1e-9
    sol = next(g for g in groups if g.policy == "solaris")
    assert memory_split(sol.representative, sol)["cached: per-CPU layers, depots"] > 0


def test_compare_writes_pngs_and_self_contained_html(demo_sweep: Path, demo_report: Path
                                                      ) -> None:
    out = demo_report
    html = (out / "report.html").read_text()
    for name in FIGURES:
        png = out / f"{name}.png"
        assert png.exists() and png.read_bytes()[:4] == b"\x89PNG"
        assert f"alt='{name}'" in html and f"id='{name}'" in html
    assert html.count("data:image/svg+xml;base64,") == len(FIGURES)
    for title in ("/proc/spl/kmem/slab", "::kmastat", "::kmem_slabs", "kstat", "/proc/slabinfo",
                  "/proc/lock_stat"):
        assert title in html
    assert "src='http" not in html  # nothing external
    # Settings of every configuration, the per-workload x per-cache table, unique labels.
    groups = cmp.group_runs(cmp.load_inputs([demo_sweep]))
    labels = [g.label for g in groups]
    assert len(set(labels)) == len(labels) == 10
    for g in groups:
        assert f"<h3>{g.label}</h3>" in html
    assert html.count("<summary>config.toml</summary>") == 10
    assert "<b>seeds</b> 1 (1 run(s) averaged)" in html
    assert "id='workloads'" in html and "producer_consumer1" in html
    wc = cmp.workload_cache_frame(groups)
    assert len(wc) == 10 * 5  # steady0 x 2 caches, producer_consumer1 x 1, phases2 x 2
    for g in groups:
        run = g.representative
        rows = wc[wc.group == g.label]
        assert rows.allocs.sum() == run.summary["ops"]["allocs"]
        assert rows.frees.sum() == run.summary["ops"]["frees"]


def _run(tmp: Path, name: str, cfg: str, seed: int, extra: list[str]) -> Path:
    out = tmp / name
    assert main(["run", cfg, "--out", str(out), "--seed", str(seed), "--no-progress",
                 "--set", 'duration="2ms"', *extra]) == 0
    return out


def test_two_experiments_are_never_averaged_together(tmp_path: Path) -> None:
    """Two seeds of experiment A are averaged; experiment B (same policy and CPU count,
    another workload) stays a group of its own, with its own label and its own numbers."""
    q = "experiments/configs/quickstart.toml"
    a1 = _run(tmp_path, "a1", q, 1, [])
    a2 = _run(tmp_path, "a2", q, 2, [])
    b = _run(tmp_path, "b", q, 1, ["--set", 'name="quickstart-big"',
                                    "--set", "workloads[0].live_objects=256"])
    runs = cmp.load_inputs([a1, a2, b])
    groups = cmp.group_runs(runs)
    assert sorted(len(g.runs) for g in groups) == [1, 2]
    labels = {g.label for g in groups}
    assert labels == {"global_lock 4 CPUs quickstart", "global_lock 4 CPUs quickstart-big"}
    df = cmp.group_frame(groups)
    per_run = cmp.results_frame(runs).set_index(cmp.results_frame(runs).index)
    by_path = {str(r.path): row for r, row in zip(runs, per_run.itertuples(), strict=True)}
    ga = df[df.label == "global_lock 4 CPUs quickstart"].iloc[0]
    gb = df[df.label == "global_lock 4 CPUs quickstart-big"].iloc[0]
    pa = [by_path[str(a1)].bytes_peak_mib, by_path[str(a2)].bytes_peak_mib]
    assert ga.bytes_peak_mib == sum(pa) / 2
    assert (ga.bytes_peak_mib_min, ga.bytes_peak_mib_max) == (min(pa), max(pa))
    assert gb.bytes_peak_mib == by_path[str(b)].bytes_peak_mib == gb.bytes_peak_mib_min
    assert ga.seeds == "1 2" and gb.seeds == "1"


def test_two_spl_runs_with_different_tunables_get_distinct_labels(tmp_path: Path) -> None:
    q = "experiments/configs/quickstart.toml"
    base = ["--set", 'policy.name="spl"']
    r1 = _run(tmp_path, "m0", q, 1, base)
    r2 = _run(tmp_path, "m16", q, 1, [*base, "--set",
                                       "policy.tunables.spl_kmem_cache_magazine_size=16"])
    groups = cmp.group_runs(cmp.load_inputs([r1, r2]))
    assert [g.label for g in groups] == ["spl 4 CPUs spl_kmem_cache_magazine_size=0",
                                         "spl 4 CPUs spl_kmem_cache_magazine_size=16"]
    assert len(cmp.representatives(groups)) == 2  # both drawn
    html = render_html(groups, [], {})
    assert "non-default tunables: spl_kmem_cache_magazine_size = 16" in html


def test_failed_sweep_points_are_listed_with_their_error(tmp_path: Path) -> None:
    f = tmp_path / "bad.toml"
    text = Path("experiments/configs/quickstart.toml").read_text().replace(
        'duration = "50ms"', 'duration = "1ms"')
    # A 64 MiB object does not fit the SPL's 32 MiB slab limit: that point fails at build.
    f.write_text(text + '\n[sweep]\npolicy = ["spl"]\n[sweep.set]\n'
                 '"caches[1].size" = [4096, 67108864]\n')
    df = run_sweep(f, tmp_path / "sw", jobs=1, progress=False)
    assert sorted(df.status) == ["error", "ok"]
    fails = cmp.load_failures([tmp_path / "sw"])
    assert len(fails) == 1 and "does not fit a 32 MiB slab" in fails[0].error
    out = tmp_path / "cmp"
    assert main(["compare", str(tmp_path / "sw"), "--out", str(out)]) == 0
    html = (out / "report.html").read_text()
    failed = html.split("id='failed'")[1].split("<h2")[0]
    assert fails[0].point in failed and "does not fit a 32 MiB slab" in failed


def test_headless_chromium_renders_the_report(demo_report: Path, tmp_path: Path) -> None:
    """Every image of report.html loads and the page logs no error in a real browser (the
    checker itself is tested on a page with a broken image and a console error)."""
    if browser.chromium() is None:
        pytest.skip("chromium is not installed (.ci/run installs it: apt-get install chromium)")
    bad = tmp_path / "bad.html"
    bad.write_text("<!doctype html><html><head><title>t</title></head><body>"
                   "<img alt='missing' src='nothere.png'>"
                   "<script>console.error('boom')</script></body></html>")
    chk = browser.check_page(bad)
    assert chk.broken == ["missing"] and any("boom" in e for e in chk.errors)
    chk = browser.check_page(demo_report / "report.html")
    assert chk.images == len(FIGURES)
    assert chk.broken == [] and chk.errors == [] and chk.console == []


def test_compare_bad_input_is_one_line_exit_2(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["compare", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "neither a run folder nor a sweep folder" in err[0]
    assert not (tmp_path / "o").exists()


def test_scalability_shape_small(tmp_path: Path) -> None:
    """Bonwick & Adams 2001: the global lock stops scaling, magazines and arrays do not."""
    text = Path("experiments/configs/scalability.toml").read_text()
    text = text.replace("cpus = [1, 2, 4, 8, 16, 32, 64]", "cpus = [1, 16]")
    text = text.replace('duration = "2ms"', 'duration = "1ms"')
    f = tmp_path / "scal.toml"
    f.write_text(text)
    df = run_sweep(f, tmp_path / "scal", jobs=2, progress=False)
    tp = df.pivot(index="policy", columns="cpus", values="ops_per_sim_s")
    speedup = tp[16] / tp[1]
    assert speedup["global_lock"] < 2
    assert speedup["spl"] > 8 and speedup["solaris"] > 8 and speedup["linux_slab"] > 8
    assert speedup["slub"] > 8

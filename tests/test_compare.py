"""kmemsim compare: every figure exists with the expected axes and series (checked on the
figure objects), the HTML report embeds every figure and the text reports, and the small
scalability experiment has Bonwick & Adams' shape."""

from __future__ import annotations

import tomllib
from pathlib import Path

import matplotlib.pyplot as plt
import pytest

from experiments import compare as cmp
from experiments.cli import main
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


def test_figures_have_expected_axes_and_series(demo_sweep: Path) -> None:
    runs = cmp.load_inputs([demo_sweep])
    assert len(runs) == 10
    figs = cmp.figures(runs)
    assert list(figs) == list(cmp.FIGURES)
    reps = cmp.representatives(runs)
    assert [r.policy for r in reps] == POLICIES and all(r.cpus == 20 for r in reps)

    lc = [a for a in figs["lock_contention"].axes if a.get_visible()]  # five in a 3 x 2 grid
    assert [a.get_title() for a in lc] == [f"{p} 20 CPUs: lock contention" for p in POLICIES]
    for a in lc:
        assert a.get_xlabel() == "simulated time (ms)" and a.get_ylabel() == "contentions per ms"
    gl_locks = [ln.get_label() for ln in lc[0].lines]
    assert any(lbl.startswith("dnode_t->lock") for lbl in gl_locks)

    for name in ("irq_off", "latency_cdf"):
        for a in figs[name].axes:
            assert a.get_xscale() == "log" and a.get_ylabel() == "cumulative share"
    alloc_ax, free_ax = figs["latency_cdf"].axes
    assert [ln.get_label() for ln in alloc_ax.lines] == [r.label for r in reps]
    assert [ln.get_label() for ln in free_ax.lines] == [r.label for r in reps]
    irq_labels = [ln.get_label() for ln in figs["irq_off"].axes[0].lines]
    assert "solaris 20 CPUs" not in irq_labels and "global_lock 20 CPUs" in irq_labels

    mem = figs["memory"].axes
    assert len(mem) == 2 * len(POLICIES)
    for k, pol in enumerate(POLICIES):
        held, frag = mem[2 * k], mem[2 * k + 1]
        assert held.get_title() == f"{pol} 20 CPUs: memory" and held.get_ylabel() == "MiB"
        labels = [t.get_text() for t in held.get_legend().get_texts()]
        assert "held by caches" in labels and "requested by live objects" in labels
        assert any(lbl.startswith("phase (") for lbl in labels)
        assert any(lbl.startswith("growth (") for lbl in labels)
        assert sorted(ln.get_label() for ln in frag.lines) == [
            "arc_buf_hdr_t", "dnode_t", "zio_buf_32768", "zio_buf_4096"]

    tp, lw = figs["scaling"].axes
    assert tp.get_xlabel() == "CPUs" and "simulated second" in tp.get_ylabel()
    series = {ln.get_label(): list(ln.get_xdata()) for ln in tp.lines}
    for pol in POLICIES:
        assert series[pol] == [16, 20]
    assert "%" in lw.get_ylabel()

    summ = figs["summary"].axes
    assert len(summ) == 6
    for a in summ:
        assert [t.get_text() for t in a.get_xticklabels()] == POLICIES
        assert len(a.patches) == len(POLICIES) and a.get_ylabel()
    for f in figs.values():
        assert f._suptitle is not None or f.axes[0].get_title()
        plt.close(f)


def test_compare_writes_pngs_and_self_contained_html(demo_sweep: Path, tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    assert main(["compare", str(demo_sweep), "--out", str(out)]) == 0
    html = (out / "report.html").read_text()
    for name in cmp.FIGURES:
        png = out / f"{name}.png"
        assert png.exists() and png.read_bytes()[:4] == b"\x89PNG"
        assert f"alt='{name}.png'" in html and f"id='{name}'" in html
    assert html.count("data:image/png;base64,") == len(cmp.FIGURES)
    for title in ("/proc/spl/kmem/slab", "::kmastat", "/proc/slabinfo", "/proc/lock_stat"):
        assert title in html
    assert "src='http" not in html  # nothing external


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

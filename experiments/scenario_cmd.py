"""`kmemsim scenario`: list the shipped scenarios, run one, print its narrative and exit with
whether every variant reproduced its expectation (0) or not (4)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from experiments import expectations, tracing
from experiments.config import ConfigError
from experiments.problems import positive_int
from experiments.scenarios import available, load, run


def _cmd(args: argparse.Namespace) -> int:
    shipped = available()
    if args.list or not args.name:
        for name, path in shipped.items():
            sc = load(path)
            print(f"{name:24} {sc.summary}")
            for v in sc.variants:
                mark = "" if v.default else " [not default: --variant or --all]"
                print(f"    {v.name:20} {v.summary}{mark}")
        return 0
    if args.name not in shipped:
        path = Path(args.name)
        if not path.exists():
            raise ConfigError(f"{args.name}: no such scenario (see `kmemsim scenario --list`)")
    else:
        path = shipped[args.name]
    sc = load(path)
    out = Path(args.out) if args.out else Path("results") / "scenarios" / sc.name
    if args.all and args.variant:
        raise ConfigError("scenario: --all and --variant exclude each other")
    results = run(sc, out, args.variant or None, args.seed,
                  progress=not args.no_progress and sys.stderr.isatty(), trace=args,
                  everything=args.all, jobs=args.jobs)
    print((out / "narrative.md").read_text(), end="")
    print(f"wrote {out}/ (timeline.png, narrative.md, scenario.json, one run folder per variant)")
    unmet = [(r.variant.name, why) for r in results for why in r.unmet]
    for variant, why in unmet:
        print(f"kmemsim: scenario {sc.name}: variant {variant} did not reproduce its "
              f"expectation: {why}", file=sys.stderr)
    return expectations.EXIT_UNEXPECTED if unmet else 0


def add_parser(sub: Any) -> None:
    """Register `kmemsim scenario` on the CLI's subparsers."""
    s = sub.add_parser(
        "scenario", help="run a shipped scenario (deadlocks, emergency paths, allocator dynamics)",
        description="Run a scenario from experiments/configs/scenarios/ (or a scenario file): "
        "each default variant (or those named by --variant, or all with --all) into its own "
        "run folder, then timeline.png with event markers, "
        "narrative.md (what happened, when, with the numbers) and scenario.json. Each variant "
        "declares what it expects (expect = {status, facts}); exit status 0 when every variant "
        "reproduced its expectation (an expected deadlock included), 4 naming the variant "
        "and the fact when one did not.")
    s.add_argument("name", nargs="?", help="scenario name (see --list) or a scenario file")
    s.add_argument("--list", action="store_true", help="list the scenarios and their variants")
    s.add_argument("--variant", action="append", metavar="NAME",
                   help="run only this variant (repeatable); also runs a variant marked "
                   "default = false")
    s.add_argument("--all", action="store_true",
                   help="run every variant, including those marked default = false (the "
                   "*-compressed ones, which shorten a kernel interval)")
    s.add_argument("--out", metavar="DIR", help="output folder (default results/scenarios/NAME)")
    s.add_argument("--seed", type=int, help="override the seed")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.add_argument("--jobs", type=positive_int, metavar="N",
                   help="variants run side by side, each in its own process (default: one "
                   "per core; 1 runs them in turn with a bar of simulated time each); the "
                   "output is the same either way")
    tracing.add_arguments(s, scenario=True)
    s.set_defaults(func=_cmd)

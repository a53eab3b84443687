"""`kmemsim validate`: run the shipped validation checks, print the table, write it as
validation.md and validation.json with the checks' figures, exit 0 when every value holds and
1 otherwise."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from experiments.config import ConfigError
from experiments.validation import available, load, run, text_table


def _cmd(args: argparse.Namespace) -> int:
    shipped = available()
    names = args.only or list(shipped)
    for name in names:
        if name not in shipped:
            raise ConfigError(f"--only {name}: no such check (known: {', '.join(shipped)})")
    checks = [load(shipped[n]) for n in names]
    out = Path(args.out) if args.out else Path("results") / "validation"
    results = run(checks, out)
    print(text_table(results), end="")
    failed = [r for r in results if r.verdict != "pass"]
    print(f"{len(results) - len(failed)} of {len(results)} values hold; wrote {out}/ "
          "(validation.md, validation.json, figures)")
    for r in failed:
        print(f"kmemsim: validate {r.check}: {r.label}: published {r.published:g}, "
              f"simulated {'—' if r.simulated is None else f'{r.simulated:g}'}"
              f"{': ' + r.reason if r.reason else ''}", file=sys.stderr)
    return 1 if failed else 0


def add_parser(sub: Any) -> None:
    """Register `kmemsim validate` on the CLI's subparsers."""
    s = sub.add_parser(
        "validate", help="reproduce the published record (papers, incidents) side by side",
        description="Run the checks of experiments/configs/validation/ (each names its paper "
        "or report and the inputs it takes from it), print published value, simulated value, "
        "tolerance and verdict per value, and write validation.md, validation.json and a "
        "figure (validation-<check>.png) per check that draws one. Exit "
        "status 0 when every value holds, 1 when one does not.")
    s.add_argument("--only", action="append", metavar="NAME",
                   help="run only this check (repeatable)")
    s.add_argument("--out", metavar="DIR", help="output folder (default results/validation)")
    s.set_defaults(func=_cmd)

"""python -m research.ablations [--only a,b] [--report-only]: train and evaluate every ablation."""

import argparse
import logging

from . import run_ablations


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m research.ablations", description=__doc__)
    p.add_argument("--only", default=None, help="comma list of ablation names (default: all)")
    p.add_argument("--report-only", action="store_true", help="only rewrite results/ablations.md/.html from finished rows")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    only = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else None
    print(f"table: {run_ablations(only, report_only=args.report_only)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

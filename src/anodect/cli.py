"""Command line: the demo generator and the config check, outside Snakemake.

    anodect demo --config config/config.yaml [--out DIR] [--seed N] [--workers N]
    anodect check-config --config config/config.yaml
    anodect discover --config config/config.yaml --out results/scans.tsv
"""

from __future__ import annotations

import argparse
import logging
import sys

from . import __version__
from .config import ConfigError, load_config, rois_from_config
from .discovery import scans_table
from .demo.generator import DemoSettings, generate
from .io import write_table
from .preflight import check_config
from .discovery import discover_all
from .planning import index_range


def _demo(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    settings = DemoSettings.from_config(config)
    overrides = {k: v for k, v in (("seed", args.seed), ("out_dir", args.out)) if v is not None}
    if overrides:
        settings = DemoSettings(**{**settings.__dict__, **overrides})
    manifest = generate(settings.out_dir, settings, rois_from_config(config),
                        crack_range=index_range(config), workers=args.workers)
    print(f"wrote {manifest['n_slices']} slices of {len(manifest['cells'])} cells "
          f"({manifest['n_cracks']} cracks) to {settings.out_dir}")
    return 0


def _check(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    check_config(config)
    print(f"{args.config}: OK")
    return 0


def _discover(args: argparse.Namespace) -> int:
    config = check_config(load_config(args.config))
    table = scans_table(discover_all(config))
    write_table(args.out, table)
    print(f"{len(table)} scans -> {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="anodect", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"anodect {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="generate the synthetic battery-CT demo")
    p.add_argument("--config", default="config/config.yaml")
    p.add_argument("--out", help="output folder (default: demo.out_dir)")
    p.add_argument("--seed", type=int, help="seed (default: demo.seed)")
    p.add_argument("--workers", type=int, default=1)
    p.set_defaults(func=_demo)
    p = sub.add_parser("check-config", help="validate a config file and its input folders")
    p.add_argument("--config", default="config/config.yaml")
    p.set_defaults(func=_check)
    p = sub.add_parser("discover", help="write the sample sheet of a config's scans")
    p.add_argument("--config", default="config/config.yaml")
    p.add_argument("--out", default="results/scans.tsv")
    p.set_defaults(func=_discover)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

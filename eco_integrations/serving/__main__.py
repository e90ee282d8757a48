"""``python -m eco_integrations.serving --guard DIR ...``: the same command as ``eco serve``."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from ..exceptions import ECOError
from .cli import add_arguments


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eco_integrations.serving", description="The ECO gateway (same as `eco serve`).")
    parser.add_argument("-v", "--verbose", action="store_true")
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        return int(args.func(args))
    except ECOError as err:
        print(f"eco serve: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())

"""``python -m eco_integrations.serving --guard DIR ...``: the same command as ``eco serve``."""

from __future__ import annotations

import sys

from ..cli import main

if __name__ == "__main__":
    raise SystemExit(main(["serve", *sys.argv[1:]]))

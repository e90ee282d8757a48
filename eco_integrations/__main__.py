"""``python -m eco_integrations ...`` is the ``eco`` command."""

from eco_integrations.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

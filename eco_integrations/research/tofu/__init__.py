"""TOFU at small scale: fine-tune original/retained models, compare ECO with baselines.

>>> from eco_integrations.research.tofu import TofuOptions, run_tofu        # doctest: +SKIP
>>> summary = run_tofu(TofuOptions(data_dir="data"), "eco-tofu")  # doctest: +SKIP
"""

from eco_integrations.research.tofu.pipeline import METHODS, TofuOptions, headline, run_tofu

__all__ = ["METHODS", "TofuOptions", "headline", "run_tofu"]

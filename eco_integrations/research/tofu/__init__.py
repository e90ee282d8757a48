"""TOFU at small scale: fine-tune original/retained models, compare ECO with baselines.

>>> from eco_integrations.research.tofu.pipeline import TofuOptions, run_tofu   # doctest: +SKIP
>>> summary = run_tofu(TofuOptions(data_dir="data"), "eco-tofu")               # doctest: +SKIP
"""

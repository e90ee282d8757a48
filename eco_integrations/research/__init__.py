"""The research side: evaluation harness, TOFU pipeline, strength search, fine-tuning.

It imports the serving library (:mod:`eco_integrations`) and is never imported by it: a service
that only answers requests loads none of this. ``scripts/check_imports.py`` keeps it so.
"""

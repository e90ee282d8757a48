"""Evaluation: dataset loaders, metrics, and the guard / multiple-choice harnesses."""

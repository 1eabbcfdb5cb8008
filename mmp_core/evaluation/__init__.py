"""Evaluation: metrics, the scenario grid of an adapter, results files, seeds folded, paired comparisons."""

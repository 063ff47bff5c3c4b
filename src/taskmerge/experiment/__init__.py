"""The merge experiment: the Val sweep, selection, one Test evaluation and the results."""

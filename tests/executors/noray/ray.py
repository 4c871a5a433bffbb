"""Stands in for a missing Ray: put this directory first on PYTHONPATH and ``import ray`` fails."""

raise ImportError("No module named 'ray'")

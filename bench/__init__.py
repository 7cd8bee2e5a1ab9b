"""Benchmarks (`make bench`): each figure measured beside its ceiling, in the same run."""

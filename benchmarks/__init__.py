"""Benchmarks run by `make bench` (`python -m benchmarks`): figures only, no assertions."""

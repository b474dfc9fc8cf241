"""Benchmarking: one latency protocol for every runtime, recorded as JSON lines (torch-free)."""

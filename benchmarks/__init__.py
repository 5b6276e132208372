"""Benchmark scripts and the PyTorch reference models (importable as `benchmarks.*`)."""

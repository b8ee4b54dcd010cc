"""What the tests and the benchmarks share: running the real service as a separate process."""

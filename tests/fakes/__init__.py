"""Small real servers that stand in for outside services in tests and benchmarks."""

"""Benchmarks of StreamLimit (see bench/README.md)."""

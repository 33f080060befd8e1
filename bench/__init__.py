"""Benchmarks that compare this pipeline with reference implementations."""

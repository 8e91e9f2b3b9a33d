"""Benchmark definitions, data loading, prompts and protocol defaults (see docs/architecture.md)."""

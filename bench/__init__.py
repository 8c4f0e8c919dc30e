"""Benchmarks: Creditdesk against raw PostgreSQL doing the same work (docs/readme-bench.md)."""

"""Benchmark scenarios; each returns a JSON-ready dict for one system."""

from __future__ import annotations

"""Profiling and scan-aware FLOP counting."""

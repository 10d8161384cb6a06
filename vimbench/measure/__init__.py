"""Measurement: environment capture, sweep plan, isolated workers, timing, memory, results store."""

"""Reporting: speed/memory curves, markdown reports, the paper's Fig. 1 reproduction."""

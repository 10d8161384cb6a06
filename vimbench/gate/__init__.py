"""CI regression gates on throughput: baseline vs current runs, and ratio gates within one run."""

from .inputs import GateInputError, load_run
from .runner import EXIT_FAIL, EXIT_PASS, EXIT_UNUSABLE, GateReport, run_gate
from .stats import mann_whitney_u

__all__ = [
    "EXIT_FAIL",
    "EXIT_PASS",
    "EXIT_UNUSABLE",
    "GateInputError",
    "GateReport",
    "load_run",
    "mann_whitney_u",
    "run_gate",
]

"""The harness above the op library: `vimbench check` (check.py) and `vimbench kernels bench` (bench.py)."""

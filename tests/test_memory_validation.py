"""The prediction against a real run of the same workload on this CPU: within 5% of the allocator's peak.

Predicted: fake-tensor trace (target cpu). Measured: the real model under torch.profiler's memory events
(every CPU allocation and free, inside kernels too) plus what was held before (weights, inputs, AdamW state).
Small sizes keep it fast on a 2-core runner; the GPU counterpart is in scripts/gpu_validate.sh.
"""

from __future__ import annotations

import pytest

from vimbench.memory import MemoryQuery
from vimbench.memory.validate import validate_on_cpu


def _cpu_scan_available() -> bool:
    import torch
    from vimbench.kernels import available_backends

    return "cpu" in available_backends(torch.device("cpu"))


CASES = [
    MemoryQuery("vim-t", 224, 1),
    MemoryQuery("vim-t", 128, 4),
    MemoryQuery("deit-t", 224, 2, attn_backend="math"),
    MemoryQuery("deit-t", 224, 8, attn_backend="sdpa"),
    MemoryQuery("vim-t", 64, 2, mode="train"),
    MemoryQuery("deit-t", 96, 8, mode="train", attn_backend="math"),
    MemoryQuery("deit-t", 64, 1, mode="train", attn_backend="sdpa"),
]


@pytest.mark.parametrize("query", CASES, ids=lambda q: f"{q.model}-{q.img_size}-b{q.batch_size}-{q.mode}")
def test_predicted_peak_within_5pct_of_measured(query, one_torch_thread):
    if query.model.startswith("vim") and not _cpu_scan_available():
        pytest.skip("the C++ CPU scan is not built here (no compiler)")
    result = validate_on_cpu(query)
    assert abs(result.error_pct) < 5.0, (
        f"predicted {result.predicted_bytes / 2**20:.2f} MiB, "
        f"measured {result.measured_bytes / 2**20:.2f} MiB"
    )

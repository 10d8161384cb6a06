"""GPU memory without a GPU: trace a point on fake tensors, replay the CUDA caching allocator, add the device
overhead, and say whether it fits (`vimbench memory`, the sweep pre-flight, `reproduce fig1 --predict`)."""

from .allocator import CachingAllocatorModel, round_size, segment_size
from .device import (
    DEFAULT_OVERHEAD_MIB,
    device_overhead_mib,
    fits,
    parse_memory_size,
    predicted_nvml_mib,
)
from .predictor import MemoryPrediction, MemoryQuery, check_query, predict, replay, trace

__all__ = [
    "DEFAULT_OVERHEAD_MIB",
    "CachingAllocatorModel",
    "MemoryPrediction",
    "MemoryQuery",
    "check_query",
    "device_overhead_mib",
    "fits",
    "parse_memory_size",
    "predict",
    "predicted_nvml_mib",
    "replay",
    "round_size",
    "segment_size",
    "trace",
]

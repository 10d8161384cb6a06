"""The one device parser: `--device auto|cpu|cuda|cuda:N` and `--devices all|cuda:0,cuda:1`, checked against
what torch can see here. Every problem is a ValueError with a one-line message (the CLI exits 2)."""

from __future__ import annotations

import re

_CUDA = re.compile(r"^cuda:(\d+)$")


def resolve_device(device: str) -> str:
    """ "auto" -> "cuda:0" when CUDA is there, else "cpu"; "cuda" -> "cuda:0". ValueError for the rest."""
    import torch

    name = (device or "auto").strip().lower()
    if name == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return "cpu"
    match = re.fullmatch(r"cuda(?::(\d+))?", name)
    if not match:
        raise ValueError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise ValueError(
            f"device {device!r} asked for, but CUDA is not available here (no CUDA GPU visible to torch "
            f"{torch.__version__})"
        )
    index = int(match[1] or 0)
    count = torch.cuda.device_count()
    if index >= count:
        raise ValueError(f"device {device!r} does not exist: {count} CUDA device(s) visible (cuda:0..)")
    return f"cuda:{index}"


def parse_devices(spec: str, device_count: int | None = None) -> list[str]:
    """"all" or "cuda:0,cuda:2" -> ["cuda:0", "cuda:2"], checked against the GPUs torch can see.

    ValueError with one line for: an empty list, no CUDA, a name that is not cuda:N, a GPU that does not
    exist, a GPU listed twice (two points would share it). `device_count` replaces torch's count (tests).
    """
    if device_count is None:
        import torch

        device_count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    items = [item.strip().lower() for item in str(spec or "").split(",")]
    if not any(items):
        raise ValueError("--devices is empty: use all or a list like cuda:0,cuda:1")
    if device_count <= 0:
        raise ValueError(f"--devices {spec}: no CUDA GPU is visible here (a CPU sweep needs no --devices)")
    if items == ["all"]:
        return [f"cuda:{i}" for i in range(device_count)]
    devices: list[str] = []
    for item in items:
        if item == "cuda":
            item = "cuda:0"
        match = _CUDA.match(item)
        if not match:
            raise ValueError(f"unknown device {item!r} in --devices: use all or cuda:N[,cuda:M...]")
        if int(match[1]) >= device_count:
            raise ValueError(
                f"{item} does not exist: {device_count} CUDA GPU(s) visible (cuda:0..cuda:{device_count - 1})"
            )
        if item in devices:
            raise ValueError(f"{item} is listed twice in --devices: points never share a GPU")
        devices.append(item)
    return devices

"""The Vim paper's Fig. 1 (arXiv 2401.09417): Vim-Ti vs DeiT-Ti "batch inference" FPS and GPU memory.

FPS is read off a log10 axis; memory in GB. Neither GPU nor batch size is stated in the paper. 738 is not a
multiple of 16: the nearest resolution a patch-16 model can run is 736, which vimbench uses and says so.
"""

from __future__ import annotations

from vimbench.results import saving_pct, speedup

PAPER_RESOLUTIONS: tuple[int, ...] = (512, 640, 738, 1024, 1248)
# the resolutions vimbench measures for them (738 -> 736, on the 16-pixel grid)
MEASURED_RESOLUTIONS: tuple[int, ...] = (512, 640, 736, 1024, 1248)
PAPER_TO_MEASURED = dict(zip(PAPER_RESOLUTIONS, MEASURED_RESOLUTIONS, strict=True))

_LOG10_FPS = {
    "deit-t": (2.54, 2.25, 2.05, 1.57, 1.26),
    "vim-t": (2.54, 2.29, 2.07, 1.91, 1.71),
}
_MEMORY_GB = {
    "deit-t": (4.56, 8.09, 12.48, 40.09, None),  # None: OOM at 1248
    "vim-t": (3.32, 4.22, 5.03, 8.13, 11.14),
}

HEADLINE_SPEEDUP = 2.8  # Vim-Ti over DeiT-Ti at 1248
HEADLINE_MEMORY_SAVING_PCT = 86.8


def paper_points(model: str) -> list[dict]:
    """Fig. 1 points for "vim-t" / "deit-t": paper_res, img_size (on our grid), fps, memory_gb (None: OOM)."""
    if model not in _LOG10_FPS:
        return []
    return [
        {
            "paper_res": res,
            "img_size": PAPER_TO_MEASURED[res],
            "fps": round(10**log_fps, 1),
            "memory_gb": mem,
            "status": "ok" if mem is not None else "oom",
        }
        for res, log_fps, mem in zip(PAPER_RESOLUTIONS, _LOG10_FPS[model], _MEMORY_GB[model], strict=True)
    ]


def paper_point(model: str, img_size: int) -> dict | None:
    """The paper's point for `model` at a measured resolution (736 matches the paper's 738), or None."""
    return next((p for p in paper_points(model) if p["img_size"] == img_size), None)


def paper_speedup(img_size: int, model_a: str = "vim-t", model_b: str = "deit-t") -> float | None:
    """a's FPS over b's as plotted in Fig. 1 at a measured resolution (Vim-Ti / DeiT-Ti: 2.82 at 1248).

    From the plotted log10 values, not the rounded FPS, so every report and `compare` show the same digits.
    """
    pa, pb = paper_point(model_a, img_size), paper_point(model_b, img_size)
    if pa is None or pb is None:  # Fig. 1 plots an FPS even where its memory curve says OOM (DeiT-Ti 1248)
        return None
    index = _index(img_size)
    return speedup(10 ** _LOG10_FPS[model_a][index], 10 ** _LOG10_FPS[model_b][index])


def paper_memory_saving_pct(img_size: int, model_a: str = "vim-t", model_b: str = "deit-t") -> float | None:
    """100 * (1 - a's GB / b's GB) from Fig. 1; None where either is OOM (DeiT-Ti at 1248)."""
    pa, pb = paper_point(model_a, img_size), paper_point(model_b, img_size)
    if pa is None or pb is None:
        return None
    return saving_pct(pa["memory_gb"], pb["memory_gb"])


def implied_deit_memory_gb() -> float:
    """The DeiT-Ti memory at 1248 that the 86.8% headline implies (Fig. 1 itself shows OOM there): ~84 GB."""
    vim_1248 = _MEMORY_GB["vim-t"][-1]
    return vim_1248 / (1.0 - HEADLINE_MEMORY_SAVING_PCT / 100.0)


def _index(img_size: int) -> int:
    return MEASURED_RESOLUTIONS.index(img_size)

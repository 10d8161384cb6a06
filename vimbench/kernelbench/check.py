"""Accuracy check of every scan backend against a float64 run of the reference loop.

One `CheckCase` is one shape and flag combination. The full grid is not a cartesian product: the L sweep
runs at one Vim-like configuration, then N, groups, each flag (z, D, delta_bias, softplus, reverse),
non-contiguous inputs and large delta*|A| are varied at a few lengths each. Inputs are made once per
(case, dtype); the reference sees the same (rounded) values upcast to float64, so the error measured is
the backend's own. Relative error = max|x - ref| / max|ref| per tensor; NaN/inf or a shape mismatch fails.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace

import torch
from torch import Tensor

from vimbench.dtypes import torch_dtypes
from vimbench.kernels.reference import selective_scan_ref
from vimbench.kernels.registry import get_backend
from vimbench.kernels.scan import selective_scan

DTYPES: dict[str, torch.dtype] = torch_dtypes()
# relative-error tolerances (max|x-ref| / max|ref|): mamba's floors for the outputs
FORWARD_TOL = {"fp32": 1e-4, "fp16": 3e-3, "bf16": 3e-2}
# gradients: fp32 1e-3; half types at the output floors (the CPU backends measure ~5e-4 fp16, ~4e-3 bf16)
GRAD_TOL = {"fp32": 1e-3, "fp16": 5e-3, "bf16": 3e-2}
ARG_NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")  # the op's positional order
# the Triton interpreter runs on CPU tensors but is slow: only short sequences
INTERPRETER_MAX_LEN = 256

Status = str  # "pass" | "FAIL" | "skip" | "fwd-only"


@dataclass(frozen=True)
class CheckCase:
    """One input configuration. `dim` channels, `dstate` states, `groups` B/C groups."""

    name: str
    seqlen: int
    dstate: int = 16
    groups: int = 1
    has_z: bool = True
    has_D: bool = True
    has_bias: bool = True
    softplus: bool = True
    reverse: bool = False
    noncontiguous: bool = False
    large_decay: bool = False
    grad: bool = True
    batch: int = 2
    dim: int = 8

    def flags(self) -> str:
        """Short human summary of the non-default parts, for the table."""
        parts = [
            "z" if self.has_z else "-z",
            "D" if self.has_D else "-D",
            "bias" if self.has_bias else "-bias",
            "sp" if self.softplus else "-sp",
        ]
        parts += [
            p
            for p, on in (
                ("rev", self.reverse),
                ("strided", self.noncontiguous),
                ("big-dA", self.large_decay),
            )
            if on
        ]
        return " ".join(parts)


@dataclass
class CheckResult:
    """One row: a backend x dtype x case x phase ("fwd" or "bwd")."""

    backend: str
    dtype: str
    case: str
    phase: str
    seqlen: int
    dstate: int
    groups: int
    flags: str
    status: Status
    worst: str = ""  # tensor with the largest relative error
    max_abs: float = float("nan")
    rel: float = float("nan")
    tol: float = float("nan")
    note: str = ""
    errors: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.status == "FAIL"

    def to_dict(self) -> dict:
        return asdict(self)


FULL_LENGTHS = (1, 7, 128, 197, 256, 785, 2048, 2049, 4097)


def full_cases() -> list[CheckCase]:
    """Every listed dimension covered, each varied from one Vim-like base (z, D, bias, softplus, N=16)."""
    cases = [CheckCase(f"L{L}", L) for L in FULL_LENGTHS]
    cases += [CheckCase(f"N{n}-L{L}", L, dstate=n) for n in (1, 64) for L in (7, 197)]
    cases += [CheckCase(f"G2-L{L}", L, groups=2) for L in (128, 785, 2049)]
    for flag in ("has_z", "has_D", "has_bias", "softplus"):
        cases += [CheckCase(f"no-{flag.removeprefix('has_')}-L{L}", L, **{flag: False}) for L in (7, 256)]
    cases += [CheckCase("bare-L197", 197, has_z=False, has_D=False, has_bias=False, softplus=False)]
    cases += [CheckCase(f"rev-L{L}", L, reverse=True) for L in (1, 7, 197, 2048, 2049, 4097)]
    cases += [CheckCase("rev-G2-N64-L256", 256, dstate=64, groups=2, reverse=True)]
    cases += [CheckCase(f"strided-L{L}", L, noncontiguous=True) for L in (197, 2049)]
    cases += [CheckCase("strided-rev-G2-L785", 785, groups=2, reverse=True, noncontiguous=True)]
    cases += [CheckCase(f"big-dA-L{L}", L, large_decay=True) for L in (197, 785)]
    cases += [CheckCase("big-dA-rev-L2049", 2049, large_decay=True, reverse=True)]
    return cases


def quick_cases() -> list[CheckCase]:
    """A handful of cases that still touch every dimension once (CI and the GPU smoke run)."""
    return [
        CheckCase("L1", 1),
        CheckCase("L197", 197),
        CheckCase("rev-G2-N64-L128", 128, dstate=64, groups=2, reverse=True),
        CheckCase("bare-N1-L7", 7, dstate=1, has_z=False, has_D=False, has_bias=False, softplus=False),
        CheckCase("strided-big-dA-L256", 256, noncontiguous=True, large_decay=True),
        CheckCase("rev-L2049", 2049, reverse=True, grad=False),
    ]


@dataclass
class CaseInputs:
    """The op's arguments for one case (leaves in the checked dtype) and the output gradient."""

    args: dict[str, Tensor | None]
    dout: Tensor


def _strided(shape: tuple[int, ...], perm: tuple[int, ...], make: Callable[..., Tensor]) -> Tensor:
    """A tensor of `shape` stored in another dimension order: same values, non-contiguous strides."""
    stored = make(*[shape[p] for p in perm])
    inverse = [perm.index(i) for i in range(len(shape))]
    return stored.permute(*inverse)


def make_inputs(case: CheckCase, dtype: torch.dtype, device: torch.device, seed: int = 0) -> CaseInputs:
    """Vim-like inputs: A = -(1..N) (S4D-real), softplus'd delta near Vim's dt range, B/C/u/z ~ N(0, 1)."""
    gen = torch.Generator().manual_seed(seed)
    b, e, n, length, g = case.batch, case.dim, case.dstate, case.seqlen, case.groups

    def randn(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=gen)

    def rand(*shape: int) -> Tensor:
        return torch.rand(*shape, generator=gen)

    def io(shape: tuple[int, ...], perm: tuple[int, ...], make: Callable[..., Tensor]) -> Tensor:
        t = _strided(shape, perm, make) if case.noncontiguous else make(*shape)
        return t.to(device=device, dtype=dtype)

    a = -torch.arange(1, n + 1, dtype=torch.float32).repeat(e, 1) * (1 + 0.1 * rand(e, n))
    if case.large_decay:  # delta*|A| in the hundreds: exp(delta*A) underflows, cumsum forms overflow
        a = a * 40.0
    shift = 3.0 if case.large_decay else 0.0

    def delta_make(*shape: int) -> Tensor:
        """Softplus'd deltas near Vim's dt range; without softplus, positive values."""
        if case.softplus:
            return randn(*shape) * 0.5 - 2.0 + shift
        return rand(*shape) * 0.2 + shift / 3

    u = io((b, e, length), (0, 2, 1), randn)
    delta = io((b, e, length), (0, 2, 1), delta_make)
    bc_shape = (b, g, n, length) if g > 1 else (b, n, length)
    bc_perm = (0, 1, 3, 2) if g > 1 else (0, 2, 1)
    B = io(bc_shape, bc_perm, randn)
    C = io(bc_shape, bc_perm, randn)
    A = (a.t().contiguous().t() if case.noncontiguous else a).to(device)
    D = randn(e).to(device) if case.has_D else None
    z = io((b, e, length), (0, 2, 1), randn) if case.has_z else None
    bias_values = rand(e) * 0.5 - 1.0 if case.softplus else rand(e) * 0.1  # keep delta > 0 without softplus
    delta_bias = bias_values.to(device) if case.has_bias else None
    args = {"u": u, "delta": delta, "A": A, "B": B, "C": C, "D": D, "z": z, "delta_bias": delta_bias}
    return CaseInputs(args, randn(b, e, length).to(device=device, dtype=dtype))


@dataclass
class Expected:
    out: Tensor
    last_state: Tensor
    grads: dict[str, Tensor] | None


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """The reference loop runs thousands of tiny ops: on a busy CPU, intra-op threads only add spinning
    (the quick check takes ~4 s with one thread and ~50 s with two on a loaded 2-core box)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def reference_outputs(case: CheckCase, inputs: CaseInputs, with_grad: bool) -> Expected:
    """Float64 reference on the same (rounded) values the backend sees, on their device (the loop is
    launch-bound at these sizes, so a GPU runs it faster than the CPU); results come back on the CPU."""
    leaves = {
        k: (v.detach().to(torch.float64).requires_grad_(with_grad) if v is not None else None)
        for k, v in inputs.args.items()
    }
    with single_threaded(), torch.enable_grad() if with_grad else torch.no_grad():
        out, last = _scan(selective_scan_ref, leaves, case)
        grads = None
        if with_grad:
            wanted = {k: v for k, v in leaves.items() if v is not None}
            values = torch.autograd.grad(out, list(wanted.values()), inputs.dout.to(torch.float64))
            grads = {k: v.cpu() for k, v in zip(wanted, values, strict=True)}
    return Expected(out.detach().cpu(), last.detach().cpu(), grads)


def _scan(
    fn: Callable[..., tuple[Tensor, Tensor]], args: dict[str, Tensor | None], case: CheckCase, **kwargs
) -> tuple[Tensor, Tensor]:
    """`fn` (the op or the reference loop) on a case's arguments: (out, last_state)."""
    return fn(
        *(args[k] for k in ARG_NAMES), case.softplus, return_last_state=True, reverse=case.reverse, **kwargs
    )


def compare(name: str, got: Tensor | None, ref: Tensor) -> tuple[float, float, str]:
    """(max abs error, relative error, problem) for one tensor; problem is "" when comparable."""
    if got is None:
        return math.inf, math.inf, f"{name}: missing"
    if tuple(got.shape) != tuple(ref.shape):
        return math.inf, math.inf, f"{name}: shape {tuple(got.shape)} != {tuple(ref.shape)}"
    got64 = got.detach().to("cpu", torch.float64)
    if not bool(torch.isfinite(got64).all()):
        bad = int((~torch.isfinite(got64)).sum())
        return math.nan, math.nan, f"{name}: {bad} non-finite"
    if ref.numel() == 0:
        return 0.0, 0.0, ""
    max_abs = float((got64 - ref).abs().max())
    scale = float(ref.abs().max())
    return max_abs, (max_abs / scale if scale > 0 else max_abs), ""


def _row(backend: str, dtype: str, case: CheckCase, phase: str, status: Status, **kw) -> CheckResult:
    return CheckResult(
        backend, dtype, case.name, phase, case.seqlen, case.dstate, case.groups, case.flags(), status, **kw
    )


def _judge(
    backend: str,
    dtype: str,
    case: CheckCase,
    phase: str,
    tol: float,
    pairs: Iterable[tuple[str, Tensor | None, Tensor]],
) -> CheckResult:
    errors: dict[str, tuple[float, float]] = {}
    problems: list[str] = []
    for name, got, ref in pairs:
        max_abs, rel, problem = compare(name, got, ref)
        errors[name] = (max_abs, rel)
        if problem:
            problems.append(problem)
    worst = max(errors, key=lambda k: (math.isnan(errors[k][1]), errors[k][1]))
    max_abs, rel = errors[worst]
    ok = not problems and all(r <= tol for _, r in errors.values())
    note = "; ".join(problems)
    return _row(
        backend,
        dtype,
        case,
        phase,
        "pass" if ok else "FAIL",
        worst=worst,
        max_abs=max_abs,
        rel=rel,
        tol=tol,
        note=note,
        errors=errors,
    )


def check_case(
    backend: str, dtype: str, case: CheckCase, device: torch.device, inputs: CaseInputs, expected: Expected
) -> list[CheckResult]:
    """Forward row (out and last state) and, when asked and the backend has one, the backward row."""
    args = inputs.args
    rows: list[CheckResult] = []
    want_grad = case.grad and expected.grads is not None
    has_backward = get_backend(backend).backward is not None
    leaves = {
        k: (v.detach().clone().requires_grad_(want_grad and has_backward) if v is not None else None)
        for k, v in args.items()
    }
    try:
        with torch.enable_grad():
            out, last = _scan(selective_scan, leaves, case, backend=backend)
    except Exception as exc:  # a crash is a failure, reported on its row
        return [_row(backend, dtype, case, "fwd", "FAIL", note=f"forward raised {type(exc).__name__}: {exc}")]
    rows.append(
        _judge(
            backend,
            dtype,
            case,
            "fwd",
            FORWARD_TOL[dtype],
            [("out", out, expected.out), ("last_state", last, expected.last_state)],
        )
    )
    if not want_grad:
        return rows
    if not has_backward:
        rows.append(_row(backend, dtype, case, "bwd", "fwd-only", note="backend has no backward"))
        return rows
    try:
        out.backward(inputs.dout)
    except Exception as exc:
        rows.append(
            _row(backend, dtype, case, "bwd", "FAIL", note=f"backward raised {type(exc).__name__}: {exc}")
        )
        return rows
    assert expected.grads is not None
    pairs = [(f"d{k}", leaves[k].grad, ref) for k, ref in expected.grads.items()]  # type: ignore[union-attr]
    rows.append(_judge(backend, dtype, case, "bwd", GRAD_TOL[dtype], pairs))
    return rows


def _probe(backend: str, dtype: str, device: torch.device) -> str:
    """ "" if the backend runs this dtype on this device, else why not (a tiny forward that raises)."""
    probe = CheckCase("probe", 4, grad=False)
    try:
        _scan(selective_scan, make_inputs(probe, DTYPES[dtype], device).args, probe, backend=backend)
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:160]
    return ""


def max_len_for(backend: str, device: torch.device) -> int | None:
    """Longest L a backend is checked at on `device`: Triton through the CPU interpreter only short ones."""
    return INTERPRETER_MAX_LEN if device.type == "cpu" and backend.startswith("triton") else None


def run_checks(
    backends: list[str],
    dtypes: list[str],
    cases: list[CheckCase],
    device: torch.device | str,
    *,
    max_len: int | None = None,
    with_grad: bool = True,
    on_result: Callable[[CheckResult], None] | None = None,
) -> list[CheckResult]:
    """Check each backend x dtype x case; `on_result` sees rows as they come (progress output)."""
    dev = torch.device(device)
    results: list[CheckResult] = []

    def emit(row: CheckResult) -> None:
        results.append(row)
        if on_result is not None:
            on_result(row)

    for dtype in dtypes:
        runnable: list[str] = []
        for backend in backends:
            why = _probe(backend, dtype, dev)
            if not why:
                runnable.append(backend)
                continue
            # a backend may not support half types on this device; fp32 it must run
            status, note = (
                ("skip", f"dtype unsupported: {why}") if dtype != "fp32" else ("FAIL", f"probe: {why}")
            )
            emit(CheckResult(backend, dtype, "*", "-", 0, 0, 0, "", status, note=note))
        for case in cases:
            todo = []
            for backend in runnable:
                limit = _limit(backend, dev, max_len)
                if limit is not None and case.seqlen > limit:
                    emit(_row(backend, dtype, case, "fwd", "skip", note=f"L > {limit} not run on {dev.type}"))
                else:
                    todo.append(backend)
            if not todo:
                continue
            case = case if with_grad else replace(case, grad=False)
            inputs = make_inputs(case, DTYPES[dtype], dev)
            expected = reference_outputs(case, inputs, with_grad=case.grad)
            for backend in todo:
                # the reference backend is the same loop; other backends keep their threads (races show)
                with single_threaded() if backend == "reference" else contextlib.nullcontext():
                    rows = check_case(backend, dtype, case, dev, inputs, expected)
                for row in rows:
                    emit(row)
    return results


def _limit(backend: str, dev: torch.device, max_len: int | None) -> int | None:
    limits = [m for m in (max_len, max_len_for(backend, dev)) if m is not None]
    return min(limits) if limits else None


def summarize(statuses: Iterable[Status]) -> dict[str, int]:
    """Rows per status, every status listed (the CLI's summary line)."""
    counts = {"pass": 0, "FAIL": 0, "skip": 0, "fwd-only": 0}
    for status in statuses:
        counts[status] = counts.get(status, 0) + 1
    return counts

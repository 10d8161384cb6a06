"""Ratio gates measured within one run: `NUM/DEN@RES OP VALUE`, e.g. `vim-t/deit-t@1248>=2.0`.

Both throughputs come from the same run on the same machine, so the ratio holds on any runner where the
absolute numbers would not. The decision uses the ratio of medians; with >= 5 samples a side we also report
a distribution-free bound on that ratio (order statistics of each side, see stats.median_bounds).
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from vimbench.results import OPTION_SHORT, option_names

from .compare import MIN_SAMPLES_FOR_TEST
from .inputs import GateInputError, GatePoint, GateRun
from .stats import median_bounds

EXPECTED_FORM = (
    "NUM/DEN@RES OP VALUE, e.g. 'vim-t/deit-t@1248>=2.0' or 'vim-t[scan=cpu]/vim-t[scan=reference]@224>=3' "
    "(OP: >= > <= <; selectors: scan, attn, batch, dtype, mode, compile, channels_last, device)"
)
SELECTORS = {
    "scan": "scan_backend",
    "attn": "attn_backend",
    "batch": "batch_size",
    "dtype": "dtype",
    "mode": "mode",
    "compile": "compile",
    "channels_last": "channels_last",
    "device": "device_kind",
}
OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt,
}
# Each side's median bound misses with probability <= 5%, so the ratio bound holds with >= 90%.
BOUND_MISS_PER_SIDE = 0.05
BOUND_CONFIDENCE = 1 - 2 * BOUND_MISS_PER_SIDE
# Fields two rows must share to be compared (unless a selector pins them or the families differ).
_CONTEXT = ("batch_size", "dtype", "mode", "compile", "channels_last", "device_kind", *option_names())
_OOM = ("oom", "skipped-oom")

_MODEL = r"[A-Za-z0-9_.:\-]+"  # vim-t, timm:vit_small_patch16_224
_SIDE = rf"{_MODEL}(?:\[[^\]]*\])?"
_GATE_RE = re.compile(
    rf"^\s*(?P<num>{_SIDE})\s*/\s*(?P<den>{_SIDE})\s*@\s*(?P<res>\d+)\s*(?:px)?\s*"
    r"(?P<op>>=|<=|>|<)\s*(?P<value>[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*$"
)
_SIDE_RE = re.compile(rf"^(?P<model>{_MODEL})(?:\[(?P<sel>[^\]]*)\])?$")


@dataclass(frozen=True)
class Side:
    model: str
    selectors: dict[str, str] = field(default_factory=dict)  # GATE_KEY column -> required value

    def __str__(self) -> str:
        if not self.selectors:
            return self.model
        short = {v: k for k, v in SELECTORS.items()}
        return f"{self.model}[{','.join(f'{short[c]}={v}' for c, v in self.selectors.items())}]"


@dataclass(frozen=True)
class RatioGate:
    text: str
    num: Side
    den: Side
    img_size: int
    op: str
    value: float

    def holds(self, ratio: float) -> bool:
        return OPERATORS[self.op](ratio, self.value)


@dataclass(frozen=True)
class RatioVerdict:
    gate: RatioGate
    context: str  # what the pair shares, e.g. "b8 fp32 infer on cpu"
    num_throughput: float | None
    den_throughput: float | None
    ratio: float | None
    bound: float | None  # the side of the ratio's confidence interval that matters for OP
    passed: bool
    verdict: str  # pass | pass (marginal) | fail
    detail: str = ""

    @property
    def failed(self) -> bool:
        return not self.passed

    @property
    def name(self) -> str:
        return f"{self.gate.text} [{self.context}]" if self.context else self.gate.text


def _parse_side(text: str, gate_text: str) -> Side:
    match = _SIDE_RE.match(text)
    if not match:
        raise GateInputError(f"--ratio {gate_text!r}: cannot read {text!r}; expected {EXPECTED_FORM}")
    selectors: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in (match["sel"] or "").split(","))):
        name, sep, value = (p.strip() for p in item.partition("="))
        if not sep or not value or name not in SELECTORS:
            raise GateInputError(f"--ratio {gate_text!r}: bad selector {item!r}; expected one of "
                                 f"{', '.join(f'{k}=VALUE' for k in SELECTORS)}")
        selectors[SELECTORS[name]] = value.lower() if value in ("True", "False") else value
    return Side(match["model"], selectors)


def parse_ratio_gate(text: str) -> RatioGate:
    match = _GATE_RE.match(text)
    if not match:
        raise GateInputError(f"--ratio {text!r}: expected {EXPECTED_FORM}")
    value = float(match["value"])
    if value <= 0:
        raise GateInputError(f"--ratio {text!r}: the bound must be a positive number")
    return RatioGate(text.strip(), _parse_side(match["num"], text), _parse_side(match["den"], text),
                     int(match["res"]), match["op"], value)


def _canonical_model(name: str, run: GateRun) -> str:
    """`name` if the run has it, else the registry's canonical name for an alias, else an error."""
    models = sorted({p.field("model") for p in run.points.values()})
    if name in models:
        return name
    try:
        from vimbench.models import get_spec

        canonical = get_spec(name).name
    except (ImportError, ValueError, KeyError):
        canonical = name
    if canonical in models:
        return canonical
    raise GateInputError(f"ratio gate: no {name} points in {run.label} (models there: {', '.join(models)})")


def _candidates(side: Side, img_size: int, run: GateRun) -> list[GatePoint]:
    model = _canonical_model(side.model, run)
    return [p for p in run.points.values()
            if p.field("model") == model and p.field("img_size") == str(img_size)
            and all(p.field(col) == val for col, val in side.selectors.items())]


def _context_fields(gate: RatioGate, nums: list[GatePoint], dens: list[GatePoint]) -> list[str]:
    pinned = set(gate.num.selectors) | set(gate.den.selectors)
    fields = [f for f in _CONTEXT if f not in pinned]
    for backend in option_names():  # Vim vs DeiT: "-" on one side, a backend on the other
        num_unset = all(p.field(backend) in ("", "-") for p in nums)
        den_unset = all(p.field(backend) in ("", "-") for p in dens)
        if num_unset != den_unset and backend in fields:
            fields.remove(backend)
    return fields


def _backends(point: GatePoint) -> str:
    return " ".join(f"{OPTION_SHORT.get(col, col)}={point.field(col)}" for col in option_names()
                    if point.field(col) not in ("", "-"))


def _describe(num: GatePoint, den: GatePoint) -> str:
    """Shared knobs (num/den where selectors split one), then backends: `b2 fp32 infer cpu (EPYC): ...`."""

    def knob(name: str) -> str:
        a, b = num.field(name), den.field(name)
        return a if a == b else f"{a}/{b}"

    parts = [f"b{knob('batch_size')}", knob("dtype"), knob("mode")]
    parts += [f"{flag}={knob(flag)}" if num.field(flag) != den.field(flag) else flag
              for flag in ("compile", "channels_last") if "true" in (num.field(flag), den.field(flag))]
    parts.append(f"{knob('device_kind')} ({num.device_name})")
    num_backends, den_backends = _backends(num), _backends(den)
    backends = num_backends if num_backends == den_backends else f"{num_backends} / {den_backends}"
    return " ".join(parts) + (f": {backends}" if backends.strip(" /") else "")


def evaluate_ratio_gate(gate: RatioGate, run: GateRun) -> list[RatioVerdict]:
    """One verdict per pair of NUM and DEN points sharing everything the gate does not pin."""
    nums, dens = _candidates(gate.num, gate.img_size, run), _candidates(gate.den, gate.img_size, run)
    for side, found in ((gate.num, nums), (gate.den, dens)):
        if not found:
            raise GateInputError(
                f"ratio gate {gate.text!r}: no {side} point at {gate.img_size}px in {run.label}"
            )
    fields = _context_fields(gate, nums, dens)

    def context(p: GatePoint) -> tuple[str, ...]:
        return (*(p.field(f) for f in fields), p.device_name)

    pairs = [(n, d) for n in nums for d in dens if context(n) == context(d)]
    if pairs and all(n.key == d.key for n, d in pairs):
        raise GateInputError(
            f"ratio gate {gate.text!r}: {gate.num} and {gate.den} select the same point at "
            f"{gate.img_size}px, and a point's ratio to itself is always 1; pin different settings with "
            "selectors, e.g. "
            "vim-t[scan=cpu]/vim-t[scan=reference]"
        )
    pairs = [(n, d) for n, d in pairs if n.key != d.key]  # a point is never its own reference
    if not pairs:
        raise GateInputError(
            f"ratio gate {gate.text!r}: {gate.num} and {gate.den} at {gate.img_size}px share no "
            f"configuration in {run.label} (compared on {', '.join(fields)}, device name); pin one with "
            "selectors, e.g. [batch=8]"
        )
    return [_judge(gate, n, d, _describe(n, d)) for n, d in pairs]


def _judge(gate: RatioGate, num: GatePoint, den: GatePoint, context: str) -> RatioVerdict:
    statuses = {num.status, den.status}
    if not statuses <= {"ok", *_OOM} or statuses <= set(_OOM):
        detail = f"cannot evaluate: {gate.num} {num.status}, {gate.den} {den.status}"
        error = num.error or den.error
        return RatioVerdict(gate, context, None, None, None, None, False, "fail",
                            f"{detail}: {error}" if error else detail)
    # A point that ran out of memory has zero throughput: the other side wins by an infinite margin.
    num_tp = num.value if num.status == "ok" else 0.0
    den_tp = den.value if den.status == "ok" else 0.0
    ratio = math.inf if den_tp == 0 else num_tp / den_tp
    passed = gate.holds(ratio)
    bound, detail = None, ""
    if num.status == den.status == "ok" and min(len(num.samples), len(den.samples)) >= MIN_SAMPLES_FOR_TEST:
        num_lo, num_hi, _ = median_bounds(num.samples, BOUND_MISS_PER_SIDE)
        den_lo, den_hi, _ = median_bounds(den.samples, BOUND_MISS_PER_SIDE)
        bound = num_lo / den_hi if gate.op.startswith(">") else num_hi / den_lo
    elif num.status != "ok" or den.status != "ok":
        detail = f"{gate.num if num.status != 'ok' else gate.den} ran out of memory (counted as 0 img/s)"
    else:
        detail = f"< {MIN_SAMPLES_FOR_TEST} samples on a side: no bound"
    verdict = "pass" if passed else "fail"
    if passed and bound is not None and not gate.holds(bound):
        verdict = "pass (marginal)"
        detail = (f"the {BOUND_CONFIDENCE:.0%} bound {bound:.3g} does not hold: the median ratio passes but "
                  "noise could flip it")
    return RatioVerdict(gate, context, num_tp if num.status == "ok" else None,
                        den_tp if den.status == "ok" else None, ratio, bound, passed, verdict, detail)

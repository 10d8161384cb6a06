"""Read a cubin's SASS and count what one iteration of a kernel's time loop executes.

The time loop is found as in /work/shared/docs/static-kernel-analysis.md: a backward branch (`BRA` to a lower
address) closes a loop; the time loops are the innermost loops whose body holds a `MUFU.EX2` (the decay
exp2(dt*A)) and their innermost siblings (per-step work split into a second loop over the same chunk).
Inside such a body the instructions are split into basic blocks and counted along the longest path from the
loop head to the closing branch (forward edges only: an if/else counts its longer side once).
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

# /*0a40*/   @!P0 LDG.E.128 R4, desc[UR6][R2.64] ;
_INSTR = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;")
_FUNC = re.compile(r"Function\s*:\s*(\S+)")
_TARGET = re.compile(r"\b0x([0-9a-f]+)\b")

# what each column counts: an opcode (first token, modifiers stripped) or a prefix of the full opcode
CATEGORIES = {
    "mufu": lambda op: op.startswith("MUFU"),
    "ex2": lambda op: op.startswith("MUFU.EX2"),
    "bar": lambda op: op.startswith("BAR"),
    "shfl": lambda op: op.startswith("SHFL"),
    "ldg": lambda op: op.startswith("LDG"),
    "stg": lambda op: op.startswith("STG"),
    "lds": lambda op: op.startswith("LDS"),
    "sts": lambda op: op.startswith("STS"),
    "local": lambda op: op.startswith(("LDL", "STL")),
    "atom": lambda op: op.startswith(("RED", "ATOM")),
}


@dataclass(frozen=True)
class Instr:
    addr: int
    opcode: str  # e.g. "MUFU.EX2", "LDG.E.128", "BRA"
    text: str

    @property
    def branch_target(self) -> int | None:
        if self.opcode.split(".")[0] not in ("BRA", "BRX", "JMP"):
            return None
        match = _TARGET.search(self.text.split(self.opcode, 1)[-1])
        return int(match.group(1), 16) if match else None

    @property
    def unconditional(self) -> bool:
        return not self.text.startswith("@") or self.text.startswith("@PT ")


@dataclass
class LoopCounts:
    """One time loop: its address range and the counts along the longest path of one iteration."""

    start: int
    end: int
    instructions: int
    counts: dict[str, int] = field(default_factory=dict)

    def __getitem__(self, key: str) -> int:
        return self.instructions if key == "instructions" else self.counts.get(key, 0)


def tool(name: str) -> str:
    """cuobjdump / nvdisasm / ptxas from triton's bundle (the machine need not have a CUDA toolkit)."""
    from triton.backends.nvidia import compiler as nv

    path = Path(nv.__file__).parent / "bin" / name
    if not path.exists():
        raise RuntimeError(f"{name} not found in triton's bundle ({path.parent})")
    return str(path)


def disassemble(cubin: bytes) -> dict[str, list[Instr]]:
    """kernel (mangled) name -> its instructions, from `cuobjdump -sass`."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "k.cubin"
        path.write_bytes(cubin)
        proc = subprocess.run([tool("cuobjdump"), "-sass", str(path)], capture_output=True, text=True,
                              timeout=300, check=True)
    return parse_sass(proc.stdout)


def parse_sass(text: str) -> dict[str, list[Instr]]:
    kernels: dict[str, list[Instr]] = {}
    current: list[Instr] | None = None
    for line in text.splitlines():
        func = _FUNC.search(line)
        if func:
            current = kernels.setdefault(func.group(1), [])
            continue
        match = _INSTR.search(line)
        if match and current is not None:
            body = match.group(2).strip()
            words = body.split()
            op = words[1] if words[0].startswith("@") and len(words) > 1 else words[0]
            if op != "NOP":
                current.append(Instr(int(match.group(1), 16), op, body))
    return kernels


def _categorise(instrs: list[Instr]) -> Counter:
    found: Counter = Counter()
    for ins in instrs:
        for name, test in CATEGORIES.items():
            if test(ins.opcode):
                found[name] += 1
    return found


def _loops(instrs: list[Instr]) -> list[tuple[int, int]]:
    """(index of the loop head, index of the closing backward branch) for every backward branch."""
    index = {ins.addr: i for i, ins in enumerate(instrs)}
    loops = []
    for i, ins in enumerate(instrs):
        target = ins.branch_target
        if target is not None and target <= ins.addr and target in index:
            loops.append((index[target], i))
    return loops


def longest_path(body: list[Instr]) -> tuple[int, Counter]:
    """Instructions (and categories) along the longest forward path from body[0] to body[-1]."""
    n = len(body)
    index = {ins.addr: i for i, ins in enumerate(body)}
    # block leaders: first instruction, branch targets inside the body, instructions after a branch
    leaders = {0}
    for i, ins in enumerate(body):
        target = ins.branch_target
        if target is not None:
            if target in index:
                leaders.add(index[target])
            if i + 1 < n:
                leaders.add(i + 1)
    starts = sorted(leaders)
    blocks = [(s, (starts[k + 1] if k + 1 < len(starts) else n)) for k, s in enumerate(starts)]
    block_of = {s: k for k, (s, _) in enumerate(blocks)}
    best: list[tuple[int, Counter] | None] = [None] * len(blocks)
    best[0] = (0, Counter())
    for k, (s, e) in enumerate(blocks):
        if best[k] is None:
            continue
        here_n, here_c = best[k]
        total = here_n + (e - s)
        counts = here_c + _categorise(body[s:e])
        last = body[e - 1]
        succs = []
        target = last.branch_target
        if target is not None and target in index and index[target] > e - 1:
            succs.append(block_of[index[target]])
        if (target is None or not last.unconditional) and k + 1 < len(blocks):
            succs.append(k + 1)
        if k == len(blocks) - 1:
            return total, counts
        for nxt in succs:
            if best[nxt] is None or best[nxt][0] < total:
                best[nxt] = (total, counts)
    return (best[-1][0], best[-1][1]) if best[-1] else (n, _categorise(body))


def time_loops(instrs: list[Instr]) -> list[LoopCounts]:
    """The loops that run once per time step, in address order, each counted along its longest path.

    Those are the innermost loops holding a MUFU.EX2 (the decay), plus their innermost sibling loops (same
    enclosing loop, e.g. a backward's per-step dB/dC reduction after its adjoint loop).
    """
    loops = sorted(set(_loops(instrs)))

    def inside(a, b):  # loop a strictly inside loop b
        return a != b and b[0] <= a[0] and a[1] <= b[1]

    innermost = [lp for lp in loops if not any(inside(other, lp) for other in loops)]

    def parent(lp):
        enclosing = [o for o in loops if inside(lp, o)]
        return min(enclosing, key=lambda o: o[1] - o[0]) if enclosing else None

    with_exp = [lp for lp in innermost
                if any(ins.opcode.startswith("MUFU.EX2") for ins in instrs[lp[0]:lp[1] + 1])]
    parents = {parent(lp) for lp in with_exp} - {None}
    chosen = [lp for lp in innermost if lp in with_exp or parent(lp) in parents]
    result = []
    for h, b in chosen:
        length, counts = longest_path(instrs[h:b + 1])
        result.append(LoopCounts(instrs[h].addr, instrs[b].addr, length, dict(counts)))
    return result


def tile_code(instrs: list[Instr]) -> LoopCounts | None:
    """What the loop enclosing the time loops (a tile of positions) runs per iteration besides them.

    A kernel that walks L in tiles does per-tile work there (load a saved state, reduce dB/dC over the
    tile's steps, barriers); it is counted whole (every instruction of the enclosing loop outside its inner
    loops), to be divided by the updates of one tile. None when the time loops have no enclosing loop.
    """
    loops = sorted(set(_loops(instrs)))
    index = {ins.addr: k for k, ins in enumerate(instrs)}
    chosen = {(index[lp.start], index[lp.end]) for lp in time_loops(instrs)}

    def inside(a, b):
        return a != b and b[0] <= a[0] and a[1] <= b[1]

    parents = {min((o for o in loops if inside(lp, o)), key=lambda o: o[1] - o[0], default=None)
               for lp in chosen} - {None}
    if not parents:
        return None
    total, counts = 0, Counter()
    for head, back in parents:
        children = [o for o in loops if inside(o, (head, back))]
        body = [ins for k, ins in enumerate(instrs[head:back + 1], head)
                if not any(c[0] <= k <= c[1] for c in children)]
        total += len(body)
        counts += _categorise(body)
    start = min(instrs[h].addr for h, _ in parents)
    end = max(instrs[b].addr for _, b in parents)
    return LoopCounts(start, end, total, dict(counts))


def loops_well_nested(instrs: list[Instr]) -> bool:
    """False when two backward-branch ranges partly overlap: out-of-line code (e.g. nvcc's divergent
    atomic paths placed after the main body) jumps back: the ranges are not loops, the counts mislead."""
    loops = sorted(set(_loops(instrs)))
    for i, (h1, b1) in enumerate(loops):
        for h2, b2 in loops[i + 1:]:
            if h1 < h2 <= b1 < b2:
                return False
    return True


def whole_kernel_counts(instrs: list[Instr]) -> dict[str, int]:
    counts = dict(_categorise(instrs))
    counts["instructions"] = len(instrs)
    return counts

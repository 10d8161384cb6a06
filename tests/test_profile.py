"""`vimbench profile`: category table, classification, trace, GPU arithmetic, per-block memory; on CPU."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from vimbench.profile.categories import CATEGORIES, EventClassifier, scope_name
from vimbench.profile.memory import AllocatorCounters, BlockMemoryTracker, model_blocks
from vimbench.profile.profiler import (
    ProfileConfig,
    achieved_gbps,
    analyse_events,
    run_profile,
    scan_min_bytes,
    summarize_categories,
)

SMALL_RES = 16  # one patch + cls: every op runs, the reference scan loop stays short


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def vim_profile(tmp_path_factory):
    trace = tmp_path_factory.mktemp("trace") / "vim.json"
    config = ProfileConfig("vim-t", img_size=SMALL_RES, device="cpu", scan_backend="reference",
                           warmup=1, iters=2, trace_path=trace)
    return run_profile(config, top=None)


@pytest.fixture(scope="module", params=["sdpa", "math"])
def deit_profile(request):
    config = ProfileConfig("deit-t", img_size=SMALL_RES, device="cpu", attn_backend=request.param,
                           warmup=1, iters=1)
    return run_profile(config, top=None)


def _shares(result) -> dict[str, float]:
    return {c.category: c.share for c in result.summary.categories}


def _op_category(result, name: str) -> set[str]:
    return {op.category for op in result.summary.top_ops if op.name == name}


def test_categories_cover_the_whole_run(vim_profile):
    summary = vim_profile.summary
    assert [c.category for c in summary.categories] == list(CATEGORIES)
    assert sum(c.share for c in summary.categories) == pytest.approx(1.0, abs=1e-9)
    assert sum(op.time_us for op in summary.top_ops) == pytest.approx(summary.total_us, rel=1e-9)
    # self time of every event adds up to the profiled forwards' wall time (minus the loop around them)
    assert 0.8 < summary.total_us / (vim_profile.wall_s_per_iter * 1e6) < 1.02


def test_scan_is_its_own_category(vim_profile):
    shares = _shares(vim_profile)
    assert shares["scan"] > 0.05 and shares["conv1d"] > 0 and shares["linear/matmul"] > 0
    assert shares["norm"] > 0 and shares["attention"] == 0
    scan_ops = [op for op in vim_profile.summary.top_ops if op.name == "vimbench::selective_scan"]
    assert [(op.category, op.calls) for op in scan_ops] == [("scan", 48)]  # 24 layers x 2 directions
    # the reference loop's elementwise ops are scan time, not "other"
    assert _op_category(vim_profile, "aten::mul") >= {"scan"}
    assert _op_category(vim_profile, "aten::mm") == {"linear/matmul"}
    assert vim_profile.memory is None and vim_profile.scan_bandwidth is None


def test_flops_ride_along(vim_profile):
    flops = vim_profile.flops
    assert flops.by_category["scan"] == 48 * 9 * 2 * 384 * 16
    assert sum(flops.by_category.values()) == flops.total


def test_trace_is_valid_chrome_json(vim_profile):
    trace = json.loads(vim_profile.trace_path.read_text())
    names = {event.get("name") for event in trace["traceEvents"]}
    assert {"vimbench::selective_scan", scope_name("conv1d"), "vimbench::forward"} <= names


def test_deit_attention_and_projections(deit_profile):
    shares = _shares(deit_profile)
    assert sum(shares.values()) == pytest.approx(1.0, abs=1e-9)
    assert shares["attention"] > 0 and shares["norm"] > 0 and shares["linear/matmul"] > 0
    assert shares["scan"] == shares["conv1d"] == 0
    assert _op_category(deit_profile, "aten::addmm") == {"linear/matmul"}  # qkv, proj, MLP, head
    if deit_profile.attn_backend == "math":
        assert _op_category(deit_profile, "aten::bmm") == {"attention"}
        assert _op_category(deit_profile, "aten::_softmax") == {"attention"}
    else:
        assert _op_category(deit_profile, "aten::scaled_dot_product_attention") == {"attention"}


# --- classification on synthetic events ------------------------------------------------------------------


@dataclass(eq=False)
class FakeEvent:
    """The FunctionEvent fields the analysis reads."""

    name: str
    cpu_parent: FakeEvent | None = None
    start: float = 0.0
    end: float = 0.0
    id: int = 0
    linked_correlation_id: int = 0
    self_cpu_time_total: float = 0.0
    input_shapes: list | None = None
    device: str = "CPU"
    is_user_annotation: bool = False
    is_async: bool = False
    cpu_children: list = field(default_factory=list)

    def __post_init__(self):
        self.device_type = SimpleNamespace(name=self.device)
        self.time_range = SimpleNamespace(start=self.start, end=self.end)
        if self.cpu_parent is not None:
            self.cpu_parent.cpu_children.append(self)


def _chain(*names: str, **last) -> FakeEvent:
    parent = None
    for name in names[:-1]:
        parent = FakeEvent(name, parent)
    return FakeEvent(names[-1], parent, **last)


@pytest.mark.parametrize(
    "names, shapes, expected",
    [
        (["aten::mm"], None, "linear/matmul"),
        (["aten::mm", "aten::resolve_conj"], None, "linear/matmul"),  # weak parent
        (["vimbench::selective_scan", "aten::mm"], None, "scan"),  # strong beats weak
        ([scope_name("attention"), "aten::matmul", "aten::bmm"], None, "attention"),
        ([scope_name("attention"), scope_name("linear/matmul"), "aten::linear", "aten::addmm"], None,
         "linear/matmul"),  # innermost scope wins: the qkv projection inside attention
        ([scope_name("norm"), "aten::mul"], None, "norm"),
        (["vimbench::forward", "aten::add"], None, "other"),
        (["aten::convolution"], [[1, 3, 32, 32], [8, 3, 16, 16]], "linear/matmul"),
        (["aten::convolution"], [[1, 8, 5], [8, 1, 4]], "conv1d"),
        (["vimbench::bidirectional_selective_scan", "cudaLaunchKernel"], None, "scan"),
        (["aten::layer_norm", "aten::native_layer_norm"], None, "norm"),
    ],
)
def test_classifier(names, shapes, expected):
    assert EventClassifier().category(_chain(*names, input_shapes=shapes)) == expected


def test_summaries_keep_every_category_and_sum_to_one():
    rows = summarize_categories([("scan", 3.0), ("other", 1.0), ("scan", 4.0), ("norm", 2.0)])
    assert [r.category for r in rows] == list(CATEGORIES)
    assert {r.category: r.time_us for r in rows}["scan"] == 7.0
    assert sum(r.share for r in rows) == pytest.approx(1.0)
    assert all(r.share == 0 for r in summarize_categories([]))


def test_device_analysis_attributes_kernels_to_their_launchers():
    """GPU time per category: kernels linked to their op, or (launched from plain Python) matched to their
    runtime call by correlation id and placed by time inside the enclosing scope; GPU mirrors of our ranges
    are not kernels."""
    forward = FakeEvent("vimbench::forward", start=0, end=100, id=1, is_user_annotation=True)
    scan_op = FakeEvent("vimbench::selective_scan", forward, 10, 20, id=2)
    FakeEvent("cudaLaunchKernel", scan_op, 11, 12, id=901, linked_correlation_id=2)
    mm = FakeEvent("aten::mm", forward, 30, 40, id=3)
    norm_scope = FakeEvent(scope_name("norm"), forward, 50, 70, id=4, is_user_annotation=True)
    orphan_launch = FakeEvent("cuLaunchKernelEx", None, 55, 56, id=902)  # outside the op tree
    gpu = dict(device="CUDA")
    kernels = [
        FakeEvent("selective_scan_fwd_kernel", None, 100, 130, id=901, linked_correlation_id=2, **gpu),
        FakeEvent("sm90_xmma_gemm", None, 130, 180, id=903, linked_correlation_id=3, **gpu),
        FakeEvent("_rms_norm_fwd", None, 180, 200, id=902, **gpu),
        FakeEvent(scope_name("norm"), None, 180, 200, id=4, is_user_annotation=True, **gpu),
        FakeEvent("Memcpy DtoD", None, 200, 204, id=999, **gpu),
    ]
    events = [forward, scan_op, *scan_op.cpu_children, mm, norm_scope, orphan_launch, *kernels]
    summary = analyse_events(events, "device", iters=2, top=None)
    times = {c.category: c.time_us for c in summary.categories}
    assert times == {"scan": 15.0, "conv1d": 0.0, "linear/matmul": 25.0, "norm": 10.0, "attention": 0.0,
                     "other": 2.0}
    assert summary.total_us == 52.0
    assert [(k.name, k.category, k.time_us) for k in summary.kernels] == [
        ("sm90_xmma_gemm", "linear/matmul", 25.0), ("selective_scan_fwd_kernel", "scan", 15.0),
        ("_rms_norm_fwd", "norm", 10.0), ("Memcpy DtoD", "other", 2.0)]
    assert {(o.name, o.category) for o in summary.top_ops} == {
        ("aten::mm", "linear/matmul"), ("vimbench::selective_scan", "scan"), (scope_name("norm"), "norm"),
        ("(no CPU op)", "other")}
    assert summary.scan_op_device_us == 15.0


def test_host_time_counts_only_the_forwards():
    forward = FakeEvent("vimbench::forward", start=0, end=10, self_cpu_time_total=2.0)
    FakeEvent("aten::mm", forward, 1, 9, self_cpu_time_total=8.0)
    outside = FakeEvent("cudaDeviceSynchronize", None, 10, 500, self_cpu_time_total=490.0)
    summary = analyse_events([forward, *forward.cpu_children, outside], "cpu", iters=1)
    assert summary.total_us == 10.0
    assert {c.category: c.time_us for c in summary.categories}["linear/matmul"] == 8.0


def test_scan_bandwidth_arithmetic():
    # kernels-and-measurement.md: Vim-S one direction, B=128, L=197, E=768, bf16 is ~47 us at 3.35 TB/s
    nbytes = scan_min_bytes(128, 197, 768, 16, groups=1, bytes_per_element=2)
    assert nbytes == 128 * 197 * (4 * 768 + 2 * 16) * 2
    assert nbytes / 3.35e12 * 1e6 == pytest.approx(46.7, abs=0.1)
    assert achieved_gbps(nbytes, 46.7) == pytest.approx(3352, rel=1e-3)
    assert achieved_gbps(nbytes, 0) == 0.0
    assert scan_min_bytes(1, 10, 4, 2, groups=2) == 10 * (16 + 8) * 4


# --- per-block activation memory with a synthetic allocator -----------------------------------------------


class FakeAllocator:
    """Bytes allocated now and the peak since the last reset, like torch.cuda's counters."""

    def __init__(self, allocated: int = 0):
        self.now = self.high = allocated

    def alloc(self, n: int) -> None:
        self.now += n
        self.high = max(self.high, self.now)

    def free(self, n: int) -> None:
        self.now -= n

    def reset(self) -> None:
        self.high = self.now

    def counters(self) -> AllocatorCounters:
        return AllocatorCounters(lambda: self.now, lambda: self.high, self.reset)


class AllocatingBlock(nn.Module):
    """Needs `temp` bytes of scratch at once, hands on `out` bytes and frees `frees` of its input."""

    def __init__(self, allocator: FakeAllocator, temp: int, out: int, frees: int):
        super().__init__()
        self.allocator, self.temp, self.out, self.frees = allocator, temp, out, frees

    def forward(self, x):
        self.allocator.alloc(self.temp)
        self.allocator.alloc(self.out)
        self.allocator.free(self.temp)
        self.allocator.free(self.frees)
        return x


class ToyModel(nn.Module):
    def __init__(self, allocator: FakeAllocator):
        super().__init__()
        self.allocator = allocator
        self.layers = nn.ModuleList([AllocatingBlock(allocator, 300, 100, 0),
                                     AllocatingBlock(allocator, 50, 100, 100),
                                     AllocatingBlock(allocator, 700, 10, 100)])

    def forward(self, x):
        self.allocator.alloc(500)  # patch embedding scratch before the blocks
        self.allocator.free(400)
        for layer in self.layers:
            x = layer(x)
        self.allocator.alloc(2000)  # a head bigger than any block
        self.allocator.free(2000)
        return x


def test_block_memory_from_a_synthetic_allocator():
    allocator = FakeAllocator(allocated=1000)  # weights + input
    model = ToyModel(allocator)
    with BlockMemoryTracker(model_blocks(model), allocator.counters()) as tracker:
        model(None)
    memory = tracker.result
    assert memory.start_bytes == 1000
    assert [(b.name, b.baseline_bytes, b.peak_bytes, b.retained_bytes) for b in memory.blocks] == [
        ("layers.0", 1100, 400, 100),
        ("layers.1", 1200, 150, 0),
        ("layers.2", 1200, 710, -90),
    ]
    assert memory.max_block.name == "layers.2"
    assert memory.peak_bytes == 2110  # the head's 2000 on top of the 1110 left after the blocks, minus 1000
    assert not model.layers[0]._forward_hooks and not model.layers[0]._forward_pre_hooks


# --- the command -------------------------------------------------------------------------------------------


def test_cli_profile_prints_the_tables(cli, tmp_path):
    trace = tmp_path / "deit.json"
    result = cli(["profile", "deit-t", "--res", SMALL_RES, "--device", "cpu", "--warmup", "1", "--iters", "1",
                  "--trace", trace, "--json", tmp_path / "out.json", "--top", "5"])
    assert result.code == 0, result.err
    for text in ("Time by category", "linear/matmul", "attention", "Top 5 ops", "total",
                 "activation memory per block: not tracked on CPU", str(trace)):
        assert text in result.out
    assert json.loads(trace.read_text())["traceEvents"]
    numbers = json.loads((tmp_path / "out.json").read_text())
    assert sum(c["share"] for c in numbers["summary"]["categories"]) == pytest.approx(1.0)
    assert numbers["flops"]["total"] > 0 and numbers["memory"] is None


@pytest.mark.parametrize(
    "args, message",
    [
        (["nope-t"], "unknown model"),
        (["vim-t", "--res", "230"], "nearest valid: 224 or 240"),
        (["vim-t", "--res", "0"], "--res must be positive"),
        (["vim-t", "--device", "tpu"], "device"),
        (["vim-t", "--scan-backend", "warp-drive"], "unknown scan backend"),
        (["deit-t", "--attn-backend", "flash9"], "unknown attention backend"),
        (["vim-t", "--iters", "0"], "--iters must be at least 1"),
        (["vim-t", "--batch-size", "0"], "--batch-size must be at least 1"),
        (["vim-t", "--trace", "/nonexistent-dir/x.json"], "does not exist"),
        (["vim-t", "--dtype", "fp8"], "fp8"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(cli, args, message):
    result = cli(["profile", *args, "--device", "cpu"] if "--device" not in args else ["profile", *args])
    assert result.code == 2
    assert message in result.err
    assert len(result.err.strip().splitlines()) == 1
    assert "Traceback" not in result.err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cli_cuda_without_gpu(cli):
    result = cli(["profile", "vim-t", "--device", "cuda"])
    assert result.code == 2 and "no CUDA GPU" in result.err


@pytest.mark.gpu
def test_gpu_profile_kernels_bandwidth_and_memory():
    result = run_profile(ProfileConfig("vim-t", img_size=224, device="cuda", warmup=2, iters=3), top=None)
    assert result.measure == "device" and result.summary.kernels
    assert sum(c.share for c in result.summary.categories) == pytest.approx(1.0)
    assert _shares(result)["scan"] > 0
    assert result.scan_bandwidth is not None and result.scan_bandwidth.gbps > 0
    assert len(result.memory.blocks) == 24
    assert all(b.peak_bytes > 0 for b in result.memory.blocks)


def test_gpu_report_rendering_and_bandwidth(capsys, monkeypatch):
    """The CUDA-only parts of the report, from a synthetic device result (no GPU needed)."""
    from vimbench.kernels import bidirectional

    from vimbench.cli.profile_cmd import _print_result

    monkeypatch.setitem(bidirectional._FUSED, "fused-test", (None, lambda device: device.type == "cuda"))
    from vimbench.profile.memory import BlockMemory, ForwardMemory
    from vimbench.profile.profiler import ProfileResult, _scan_bandwidth, summarize_ops

    config = ProfileConfig("vim-s", img_size=224, device="cuda", batch_size=128, dtype="bf16")
    with torch.device("meta"):
        from vimbench.models import create_model

        model = create_model("vim-s", img_size=224, scan_backend="reference")
    bandwidth = _scan_bandwidth(model, config, "reference", torch.device("cuda"), scan_us=48 * 46.7)
    assert (bandwidth.directions, bandwidth.fused) == (48, False)
    assert bandwidth.bytes_per_forward == 48 * scan_min_bytes(128, 197, 768, 16, 1, 2)
    assert bandwidth.gbps == pytest.approx(3352, rel=1e-3)
    fused = _scan_bandwidth(model, config, "fused-test", torch.device("cuda"), scan_us=24 * 46.7)
    assert fused.fused and fused.bytes_per_forward == 24 * 128 * 197 * (6 * 768 + 4 * 16) * 2

    device_rows = [("scan", 30.0), ("linear/matmul", 60.0), ("norm", 10.0)]
    kernels = summarize_ops([("selective_scan_fwd<bf16>" + "x" * 200, "scan", 30.0),
                             ("sm90_gemm", "linear/matmul", 60.0), ("rms_norm", "norm", 10.0)], 100.0)
    device = analyse_events([], "device", 1)
    device.categories = summarize_categories(device_rows)
    device.total_us, device.kernels, device.top_ops = 100.0, kernels, kernels
    host = analyse_events([], "cpu", 1)
    host.categories = summarize_categories([("other", 40.0), ("scan", 10.0)])
    host.total_us = 50.0
    blocks = [BlockMemory(f"layers.{i}", 120 * 2**20, 250 * 2**20, 2**20) for i in range(24)]
    memory = ForwardMemory(start_bytes=100 * 2**20, peak_bytes=300 * 2**20, blocks=blocks)
    result = ProfileResult(config=config, device="cuda:0", scan_backend="triton", attn_backend="-",
                           measure="device", summary=device, cpu_summary=host, scan_bandwidth=bandwidth,
                           memory=memory, wall_s_per_iter=0.001)
    _print_result(result, top=3)
    out = capsys.readouterr().out
    for text in ("self CUDA time per forward", "host share", "Top 3 CUDA kernels", "selective_scan_fwd<bf16>",
                 "GB/s achieved", "3352", "Activation memory per block", "layers.23", "250.0",
                 "forward peak above weights+input: 300.0 MiB"):
        assert text in out, text
    assert "not tracked on CPU" not in out

"""Vision Mamba (Vim), bidirectional "v2" blocks with a middle cls token, exactly as released by hustvl/Vim.

State-dict keys and shapes match the official checkpoints; with official weights the logits match the
official model's. Differences from upstream are in how, never in what, is computed: the backward direction
runs in the original token order (anti-causal conv + reverse scan) instead of on flipped copies, and every
hot op goes through `vimbench.kernels`, so any scan backend (reference, fast CPU, Triton, CUDA) can run it.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vimbench.kernels import (
    ScanDirection,
    add_rms_norm,
    bidirectional_selective_scan,
    causal_conv1d_silu,
)
from vimbench.kernels.cpu_block import vim_block_cpu, vim_block_cpu_ready
from vimbench.layers import add_patch_tokens, init_linear_conv, trunc_normal_


@dataclass(frozen=True)
class VimConfig:
    embed_dim: int
    depth: int = 24
    patch_size: int = 16
    stride: int = 16
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    norm_eps: float = 1e-5


KernelScope = Callable[[str], AbstractContextManager[None]]


class ScopedKernels:
    """Mixin: the fused kernel calls of a module run inside `kernel_scope(category)` when one is set on the
    instance (the profiler's category scopes set it for the model they profile; "conv1d", "norm", "scan")."""

    kernel_scope: KernelScope | None = None

    def _kernel(self, category: str) -> AbstractContextManager[None]:
        scope = self.kernel_scope
        return scope(category) if scope is not None else contextlib.nullcontext()


class RMSNorm(nn.Module):
    """Weight-only RMSNorm (mamba's), applied through `vimbench.kernels.add_rms_norm`."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))


class VimMixer(ScopedKernels, nn.Module):
    """Bidirectional Mamba mixer ("bimamba v2", outputs summed and divided by 2)."""

    def __init__(self, cfg: VimConfig, scan_backend: str = "auto"):
        super().__init__()
        d_model, n = cfg.embed_dim, cfg.d_state
        self.d_inner = cfg.expand * d_model
        self.d_state = n
        self.dt_rank = math.ceil(d_model / 16)
        self.scan_backend = scan_backend
        # direct parameters first, as upstream registers them (state-dict order)
        self.A_log = nn.Parameter(torch.empty(self.d_inner, n))
        self.D = nn.Parameter(torch.empty(self.d_inner))
        self.A_b_log = nn.Parameter(torch.empty(self.d_inner, n))
        self.D_b = nn.Parameter(torch.empty(self.d_inner))
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=False)
        self.conv1d = nn.Conv1d(
            self.d_inner, self.d_inner, cfg.d_conv, groups=self.d_inner, padding=cfg.d_conv - 1
        )
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * n, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        self.conv1d_b = nn.Conv1d(
            self.d_inner, self.d_inner, cfg.d_conv, groups=self.d_inner, padding=cfg.d_conv - 1
        )
        self.x_proj_b = nn.Linear(self.d_inner, self.dt_rank + 2 * n, bias=False)
        self.dt_proj_b = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

    @torch.no_grad()
    def reset_parameters(self, dt_min: float = 1e-3, dt_max: float = 0.1, dt_floor: float = 1e-4) -> None:
        """mamba's init: S4D-real A, D = 1, dt bias = softplus^-1 of log-uniform dt."""
        a_log = torch.log(torch.arange(1, self.d_state + 1, dtype=torch.float32)).repeat(self.d_inner, 1)
        directions = ((self.A_log, self.D, self.dt_proj), (self.A_b_log, self.D_b, self.dt_proj_b))
        for A_log, D, dt_proj in directions:
            A_log.copy_(a_log)
            D.fill_(1.0)
            std = self.dt_rank**-0.5
            nn.init.uniform_(dt_proj.weight, -std, std)
            dt = torch.exp(
                torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
            ).clamp(min=dt_floor)
            dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
            dt_proj.bias._no_reinit = True

    def _direction(self, xc: Tensor, x_proj: nn.Linear, dt_proj: nn.Linear, A_log: Tensor, D: Tensor):
        batch, _, length = xc.shape
        x_dbl = F.linear(xc.transpose(1, 2).reshape(batch * length, -1), x_proj.weight)
        dt, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = (dt_proj.weight @ dt.t()).view(-1, batch, length).transpose(0, 1)
        # strided views of x_dbl: every scan backend reads B and C through their strides
        B = B.view(batch, length, -1).transpose(1, 2)
        C = C.view(batch, length, -1).transpose(1, 2)
        return ScanDirection(
            u=xc, delta=delta, A=-torch.exp(A_log.float()), B=B, C=C, D=D.float(),
            delta_bias=dt_proj.bias.float(),
        )

    def forward(self, hidden: Tensor) -> Tensor:
        batch, length, _ = hidden.shape
        # (2E, B*L) -> (B, 2E, L) without a transpose copy, as upstream does
        xz = (self.in_proj.weight @ hidden.reshape(batch * length, -1).t()).view(-1, batch, length)
        xz = xz.transpose(0, 1)
        x, z = xz.chunk(2, dim=1)
        with self._kernel("conv1d"):
            xc_f = causal_conv1d_silu(x, self.conv1d.weight, self.conv1d.bias)
        with self._kernel("conv1d"):
            xc_b = causal_conv1d_silu(x, self.conv1d_b.weight, self.conv1d_b.bias, reverse=True)
        fwd = self._direction(xc_f, self.x_proj, self.dt_proj, self.A_log, self.D)
        bwd = self._direction(xc_b, self.x_proj_b, self.dt_proj_b, self.A_b_log, self.D_b)
        with self._kernel("scan"):
            y = bidirectional_selective_scan(fwd, bwd, z, delta_softplus=True, backend=self.scan_backend)
        # halving after the projection is exact and touches D instead of E channels
        return F.linear(y.transpose(1, 2), self.out_proj.weight) * 0.5


class VimBlock(ScopedKernels, nn.Module):
    """Pre-norm residual block: res = h + res (fp32), h = mixer(RMSNorm(res))."""

    def __init__(self, cfg: VimConfig, scan_backend: str = "auto"):
        super().__init__()
        self.mixer = VimMixer(cfg, scan_backend)
        self.norm = RMSNorm(cfg.embed_dim, cfg.norm_eps)

    def forward(self, hidden: Tensor, residual: Tensor | None) -> tuple[Tensor, Tensor]:
        mixer = self.mixer
        if vim_block_cpu_ready(hidden, mixer.A_log, mixer.scan_backend):
            # CPU inference: the same computation in one C++ call (vimbench.kernels.cpu_block)
            return vim_block_cpu(
                hidden, residual, self.norm.weight, self.norm.eps,
                mixer.in_proj.weight, mixer.out_proj.weight,
                [mixer.conv1d.weight, mixer.conv1d.bias, mixer.x_proj.weight, mixer.dt_proj.weight,
                 mixer.dt_proj.bias, mixer.A_log, mixer.D],
                [mixer.conv1d_b.weight, mixer.conv1d_b.bias, mixer.x_proj_b.weight, mixer.dt_proj_b.weight,
                 mixer.dt_proj_b.bias, mixer.A_b_log, mixer.D_b],
                mixer.dt_rank,
            )  # fmt: skip
        with self._kernel("norm"):
            normed, residual = add_rms_norm(hidden, residual, self.norm.weight, self.norm.eps)
        return self.mixer(normed), residual


class VisionMamba(ScopedKernels, nn.Module):
    family = "vim"

    def __init__(
        self,
        cfg: VimConfig,
        img_size: int = 224,
        num_classes: int = 1000,
        in_chans: int = 3,
        scan_backend: str = "auto",
    ):
        super().__init__()
        self.cfg = cfg
        self.num_classes = num_classes
        add_patch_tokens(self, img_size, cfg.patch_size, cfg.stride, in_chans, cfg.embed_dim)
        self.head = nn.Linear(cfg.embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.layers = nn.ModuleList(VimBlock(cfg, scan_backend) for _ in range(cfg.depth))
        self.norm_f = RMSNorm(cfg.embed_dim, cfg.norm_eps)
        self.reset_parameters()

    @property
    def cls_index(self) -> int:
        """Where the cls token sits: the middle of the patch sequence, M // 2."""
        return self.patch_embed.num_patches // 2

    @property
    def scan_backend(self) -> str:
        return self.layers[0].mixer.scan_backend

    def set_scan_backend(self, name: str) -> None:
        for layer in self.layers:
            layer.mixer.scan_backend = name

    @torch.no_grad()
    def reset_parameters(self) -> None:
        trunc_normal_(self.pos_embed)
        trunc_normal_(self.cls_token)
        for layer in self.layers:
            layer.mixer.reset_parameters()
        self.apply(init_linear_conv)
        for layer in self.layers:  # mamba's prenorm-residual rescale
            nn.init.kaiming_uniform_(layer.mixer.out_proj.weight, a=math.sqrt(5))
            layer.mixer.out_proj.weight /= math.sqrt(self.cfg.depth)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.patch_embed(x)
        mid = self.cls_index
        cls = self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype)
        x = torch.cat((x[:, :mid], cls, x[:, mid:]), dim=1) + self.pos_embed.to(x.dtype)
        hidden, residual = x, None
        for layer in self.layers:
            hidden, residual = layer(hidden, residual)
        with self._kernel("norm"):
            out, _ = add_rms_norm(hidden, residual, self.norm_f.weight, self.norm_f.eps)
        return out[:, mid]

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.forward_features(x))

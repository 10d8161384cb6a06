#!/usr/bin/env bash
# Fetch the official mamba-ssm sdist and compile its selective-scan forward for a GPU architecture, so that
# `vimbench kernels inspect --official DIR` can show it beside ours. No GPU needed; nothing here is committed
# (DIR should be git-ignored, e.g. .official/).
#
#   scripts/fetch_official_mamba.sh DIR [ARCHS] [DTYPES]     e.g. scripts/fetch_official_mamba.sh .official sm_90 fp32,bf16
#
# Only the instantiations Vim launches are built (real A, variable B and C, with z; the thread/item configs
# mamba picks for L <= 256 and L > 1024, both with a ragged last chunk), with the nvcc flags of mamba's
# setup.py. A CPU torch wheel lacks c10/cuda/impl/cuda_cmake_macros.h: a one-line stand-in replaces it.
# Writes DIR/official_<arch>_<dtype>.cubin.
set -euo pipefail

dir="${1:?usage: scripts/fetch_official_mamba.sh DIR [ARCHS] [DTYPES]}"
archs="${2:-sm_90}"
dtypes="${3:-fp32}"
cd "$(dirname "$0")/.."
mkdir -p "$dir/sdist" "$dir/src" "$dir/include/c10/cuda/impl"
dir="$(cd "$dir" && pwd)"
command -v nvcc >/dev/null || { echo "nvcc not found" >&2; exit 2; }

if ! ls "$dir"/sdist/mamba_ssm-*.tar.gz >/dev/null 2>&1; then
  # metadata preparation runs mamba's setup.py: skip its CUDA build, use the installed torch
  MAMBA_SKIP_CUDA_BUILD=TRUE python -m pip download --no-deps --no-binary :all: --no-build-isolation \
    mamba-ssm -d "$dir/sdist"
fi
tarball="$(ls "$dir"/sdist/mamba_ssm-*.tar.gz | tail -n 1)"
tar xzf "$tarball" -C "$dir/src"
csrc="$(ls -d "$dir"/src/mamba_ssm-*/csrc/selective_scan | tail -n 1)"
echo "// stand-in for the header a CUDA build of torch generates" > "$dir/include/c10/cuda/impl/cuda_cmake_macros.h"

torch_includes="$(python -c 'from torch.utils.cpp_extension import include_paths; print(" ".join("-I" + p for p in include_paths()))')"
flags=(-O3 -std=c++17 --use_fast_math -U__CUDA_NO_HALF_OPERATORS__ -U__CUDA_NO_HALF_CONVERSIONS__
       -U__CUDA_NO_BFLOAT16_OPERATORS__ -U__CUDA_NO_BFLOAT16_CONVERSIONS__ -U__CUDA_NO_BFLOAT162_OPERATORS__
       -U__CUDA_NO_BFLOAT162_CONVERSIONS__ --expt-relaxed-constexpr --expt-extended-lambda -lineinfo)

for dtype in ${dtypes//,/ }; do
  case "$dtype" in
    fp32) input_t=float ;;
    bf16) input_t=at::BFloat16 ;;
    fp16) input_t=at::Half ;;
    *) echo "unknown dtype $dtype" >&2; exit 2 ;;
  esac
  src="$dir/instantiate_${dtype}.cu"
  {
    echo '#include "selective_scan_fwd_kernel.cuh"'
    for cfg in "32, 8" "128, 16"; do  # L <= 256 (Vim at 224 px: L=197) and L > 1024 (1248 px: L=6085)
      echo "template __global__ void selective_scan_fwd_kernel<Selective_Scan_fwd_kernel_traits<$cfg, 1, false, true, true, true, $input_t, float>>(SSMParamsBase);"
    done
  } > "$src"
  for arch in ${archs//,/ }; do
    out="$dir/official_${arch}_${dtype}.cubin"
    echo "nvcc $arch $dtype -> $out"
    # shellcheck disable=SC2086
    nvcc "${flags[@]}" -cubin "-arch=$arch" -I"$csrc" -I"$dir/include" $torch_includes "$src" -o "$out"
  done
done
echo "done: vimbench kernels inspect --official $dir --arch ${archs} --dtype ${dtypes}"

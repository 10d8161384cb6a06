#!/usr/bin/env bash
# One prepared GPU validation run: correctness of every scan backend on the GPU, kernel timings, the paper's
# Fig. 1 protocol and a Vim-S vs DeiT-S sweep, all written under OUT_DIR, with a short table printed last.
#
#   scripts/gpu_validate.sh OUT_DIR            (on the device machine: scripts/gpu_validate.sh "$OUT")
#
# Budget: about 9 minutes in all (GPU_VALIDATE_BUDGET_S, default 530 s); each step gets at most its own cap and
# what is left of the budget, most important first. Without a GPU it runs the CPU parts and says what it skipped.
set -uo pipefail

out="${1:?usage: scripts/gpu_validate.sh OUT_DIR}"
budget="${GPU_VALIDATE_BUDGET_S:-530}"
cd "$(dirname "$0")/.."
mkdir -p "$out"
out="$(cd "$out" && pwd)"
steps="$out/steps.tsv"
printf 'step\tstatus\tseconds\tlog\n' > "$steps"
start=$(date +%s)
export MPLBACKEND=Agg PYTHONUNBUFFERED=1

# step NAME CAP_S CMD...: run CMD with a timeout of min(CAP_S, budget left), log to OUT/NAME.log
step() {
  local name="$1" cap="$2"; shift 2
  local left=$(( budget - ($(date +%s) - start) ))
  if (( left < 20 )); then
    printf '%s\tskipped (budget spent)\t0\t-\n' "$name" >> "$steps"; echo "== $name: skipped, budget spent"; return
  fi
  (( cap > left )) && cap=$left
  echo "== $name (cap ${cap}s): $*"
  local t0=$(date +%s)
  timeout --kill-after=10 "$cap" "$@" > "$out/$name.log" 2>&1
  local rc=$?
  local status="ok"
  (( rc == 124 || rc == 137 )) && status="timeout"
  (( rc != 0 && rc != 124 && rc != 137 )) && status="exit $rc"
  printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$(( $(date +%s) - t0 ))" "$name.log" >> "$steps"
  tail -n 3 "$out/$name.log" | sed 's/^/   /'
}
skip() { printf '%s\tskipped (%s)\t0\t-\n' "$1" "$2" >> "$steps"; echo "== $1: skipped ($2)"; }

if ! python -c "import vimbench" 2>/dev/null; then
  step install 120 pip install --no-deps --no-build-isolation -e .
fi
step env 60 vimbench env
vimbench env --json > "$out/env.json" 2>/dev/null

if python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  step check 150 vimbench check --device cuda --quick --json "$out/check.json"
  step fig1 200 vimbench reproduce fig1 --device cuda --batch-size 128 --dtype fp32 --attn-backend both \
    --warmup 3 --iters 10 --min-time 0.3 --repeats 3 --timeout 90 --out "$out/fig1"
  step kernels_bench 120 vimbench kernels bench --device cuda --shapes vim-t,vim-s --batch 1,128 \
    --dtype fp32,bf16 --csv "$out/kernels_bench.csv"
  # ours against the official kernel on the same card: "auto" keeps preferring mamba_ssm until this shows
  # ours >= 1.0x (kernels/registry.py PREFER_OFFICIAL_ON_CUDA)
  if python -c "import mamba_ssm.ops.selective_scan_interface" 2>/dev/null; then
    step kernels_vs_official 90 vimbench kernels bench --device cuda --shapes vim-s --batch 1,128 \
      --dtype fp32,bf16 --backends triton,cuda,mamba_ssm --csv "$out/kernels_vs_official.csv"
    step kernels_vs_official_1248 60 vimbench kernels bench --device cuda --shapes vim-s --batch 1 --res 1248 \
      --dtype fp32 --backends triton,mamba_ssm --csv "$out/kernels_vs_official_1248.csv"
  else
    skip kernels_vs_official "mamba_ssm not installed"
  fi
  step sweep 170 vimbench sweep --models vim-s,deit-s --res 224..1248 --batch-size 64 --dtype bf16 \
    --device cuda --warmup 3 --iters 10 --min-time 0.3 --repeats 3 --timeout 90 --out "$out/sweep-vim-s-deit-s"
  # training memory (forward + backward + AdamW) for the predictor's train mode; every row is predicted too
  step memory_train 60 vimbench sweep --models vim-t,deit-t --res 224,512 --batch-size 32 --mode train \
    --device cuda --warmup 1 --iters 2 --min-time 0 --repeats 1 --timeout 40 --no-plots \
    --out "$out/sweep-train-memory"
  # predicted vs measured memory per point (fig1, sweeps) and the measured device overhead
  step memory_validate 30 python scripts/memory_validate.py "$out"
else
  echo "no CUDA GPU: running the CPU parts only"
  skip check-cuda "no GPU"; skip fig1-cuda "no GPU"; skip kernels_bench-cuda "no GPU"; skip sweep-cuda "no GPU"
  step check_cpu 150 vimbench check --device cpu --quick --json "$out/check.json"
  step kernels_compile_sm90 150 vimbench kernels compile --arch sm_90 --quick
  step kernels_inspect 150 vimbench kernels inspect --arch sm_90 --backend triton --format json
  step kernels_bench_cpu 90 vimbench kernels bench --device cpu --shapes vim-t --batch 1 --dtype fp32 \
    --csv "$out/kernels_bench.csv"
  step sweep_cpu 150 vimbench sweep --models vim-t,deit-t --res 224,320 --batch-size 1 --device cpu \
    --out "$out/sweep-cpu"
  step memory_predict 90 vimbench memory --models vim-t,deit-t --res 512,1024,1248 --batch-size 128 \
    --attn-backend math --format csv
fi

python scripts/gpu_validate_summary.py "$out"

#!/usr/bin/env bash
# Prove the GPU path in one command (issue #22; docs/performance.md#gpus). See --help.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="$ROOT/reports/gpu-check"
VENV="$ROOT/.venv-gpu"
PY="python3"
WHEELS=""
TORCH_INDEX=""
CPU_ONLY=0
EPOCHS=""

usage() {
  cat <<'EOF'
usage: scripts/gpu_check.sh [options]

On a machine with an NVIDIA GPU: install the project into a venv, run the tests marked `gpu`,
run `dcganlab bench --gpu`, train digits-dcgan with the default params and compare its quality
with the committed CPU run's, and, with two or more GPUs, a short torchrun/NCCL training.
Everything lands in OUT: gpu-check.json (every step's result), gpu-check.log, bench-gpu.json.
Exit status 0 when every step passed (or was skipped), 1 otherwise, 2 for bad options or no GPU.

options:
  --out DIR          results folder (default: reports/gpu-check)
  --venv DIR         the venv: reused when it exists, else created (default: .venv-gpu)
  --python PY        the interpreter the venv is made from (default: python3). If PY can import
                     torch already (a GPU image's own), the venv reuses PY's packages and only
                     what is missing is installed; else torch comes from the registry, built for
                     the CUDA version nvidia-smi reports.
  --wheels DIR       install from this folder of wheels only (no index; machines without network)
  --torch-index URL  an extra package index for torch (default: picked from nvidia-smi's CUDA version)
  --epochs N         train digits-dcgan for N epochs instead of params.yaml's (then its quality is
                     recorded but not compared: the CPU run is at params.yaml's epochs)
  --cpu-only         no GPU needed: install, run the `gpu` tests (they skip), skip the GPU steps
                     (with --epochs N: the digits-dcgan training and evaluation on the CPU)
  -h, --help         this text
EOF
}

die() { echo "error: $*" >&2; exit 2; }
need_value() { [[ $# -ge 2 && -n "$2" && "$2" != --* ]] || die "$1 needs a value (see --help)"; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --out) need_value "$@"; OUT="$2"; shift 2 ;;
    --venv) need_value "$@"; VENV="$2"; shift 2 ;;
    --python) need_value "$@"; PY="$2"; shift 2 ;;
    --wheels) need_value "$@"; WHEELS="$2"; shift 2 ;;
    --torch-index) need_value "$@"; TORCH_INDEX="$2"; shift 2 ;;
    --epochs) need_value "$@"; EPOCHS="$2"; shift 2 ;;
    --cpu-only) CPU_ONLY=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
done
[[ -z "$WHEELS" || -d "$WHEELS" ]] || die "--wheels: no folder at $WHEELS"
[[ -z "$EPOCHS" || "$EPOCHS" =~ ^[1-9][0-9]*$ ]] || die "--epochs must be a positive integer, not '$EPOCHS'"
command -v "$PY" >/dev/null || die "--python: no interpreter '$PY'"
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || die "dcganlab needs Python >= 3.11 (pyproject's requires-python); $PY is $("$PY" -V 2>&1)"
GPUS=0
if [[ $CPU_ONLY == 0 ]]; then
  command -v nvidia-smi >/dev/null || die "no nvidia-smi: no NVIDIA driver here (--cpu-only checks the rest)"
  GPUS=$(nvidia-smi -L | grep -c '^GPU ' || true)
  [[ $GPUS -ge 1 ]] || die "nvidia-smi lists no GPU (--cpu-only checks the rest)"
fi

mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
for f in gpu-check.json environment.json tests.json quality.json ddp.json bench-gpu.json pytest-gpu.xml; do
  rm -f "$OUT/$f"
done
rm -rf "$OUT/steps"
mkdir -p "$OUT/steps"
LOG="$OUT/gpu-check.log"
: > "$LOG"
exec > >(tee -a "$LOG") 2>&1
export PYTHONPATH="$ROOT/src" MLFLOW_DISABLE_TELEMETRY=true PIP_DISABLE_PIP_VERSION_CHECK=1
export PIP_RETRIES=1 PIP_DEFAULT_TIMEOUT=20  # without network: fail in seconds, not minutes
unset MLFLOW_TRACKING_URI
START=$(date +%s)
N=0
FAILED=0

# step NAME COMMAND...: run it, log it, record {name, status, seconds} in OUT/steps; carry on if it fails
step() {
  local name="$1" t0 rc status
  shift
  N=$((N + 1))
  echo "=== [$N] $name ($(date -u +%H:%M:%S))"
  t0=$(date +%s)
  set +e
  ( set -e; "$@" )  # a subshell, not `if "$@"`: there bash would ignore -e inside the step
  rc=$?
  set -e
  if [[ $rc == 0 ]]; then status=passed; else status=failed; FAILED=1; fi
  LAST_RC=$rc
  echo "=== [$N] $name: $status in $(( $(date +%s) - t0 )) s"
  printf '{"step": %d, "name": "%s", "status": "%s", "exit": %d, "seconds": %d}\n' \
    "$N" "$name" "$status" "$rc" "$(( $(date +%s) - t0 ))" > "$OUT/steps/$(printf %02d "$N").json"
}

skip() {
  N=$((N + 1))
  echo "=== [$N] $1: skipped ($2)"
  printf '{"step": %d, "name": "%s", "status": "skipped", "why": "%s", "seconds": 0}\n' "$N" "$1" "$2" \
    > "$OUT/steps/$(printf %02d "$N").json"
}

# ---------------------------------------------------------------- 1. install
cuda_index() {  # the torch index for the driver's CUDA version (torch 2.14's default wheels are CUDA 13.0 builds)
  local v major minor
  v=$(nvidia-smi | sed -n 's/.*CUDA Version: *\([0-9]*\.[0-9]*\).*/\1/p' | head -1)
  major=${v%%.*}; minor=${v#*.}
  if [[ -z "$v" || $major -ge 13 ]]; then echo ""
  elif [[ $major -eq 12 && $minor -ge 8 ]]; then echo "https://download.pytorch.org/whl/cu128"
  elif [[ $major -eq 12 && $minor -ge 6 ]]; then echo "https://download.pytorch.org/whl/cu126"
  else echo "unsupported: the driver's CUDA $v is older than 12.6"; fi
}

# pyproject's dependencies (+ pytest) except dvc (the check runs the stage commands itself, and
# dvc's tree is large), and except torch/torchvision when the base interpreter has them
requirements() {
  "$VENV/bin/python" - "$1" "$ROOT/pyproject.toml" <<'EOF'
import re, sys, tomllib
deps = tomllib.load(open(sys.argv[2], "rb"))["project"]["dependencies"] + ["pytest>=8"]
skip = {"dvc"} if sys.argv[1] == "with-torch" else {"dvc", "torch", "torchvision"}
print("\n".join(d for d in deps if re.split(r"[<>=!~ ;\[]", d)[0] not in skip))
EOF
}

install() {
  local pip_opts=() index base_torch=0
  [[ -n "$WHEELS" ]] && pip_opts=(--no-index --find-links "$WHEELS")
  if [[ -x "$VENV/bin/python" ]]; then
    echo "install: reusing the venv at $VENV"
  else
    # some images' Python has no ensurepip: then a venv without pip, using the base's (seen through the .pth)
    "$PY" -m venv "$VENV" 2>/dev/null || { rm -rf "$VENV"; "$PY" -m venv --without-pip "$VENV"; }
    if "$PY" -c 'import torch' 2>/dev/null; then  # a GPU image's torch: see it from the venv, do not reinstall it
      "$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"]); print(sysconfig.get_paths()["platlib"])' \
        > "$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/_base_packages.pth"
      base_torch=1
    fi
    if [[ $base_torch == 1 ]]; then
      echo "install: torch from $PY ($("$PY" -c 'import torch; print(torch.__version__)')); the rest into $VENV"
      "$VENV/bin/python" -m pip install -q "${pip_opts[@]}" $(requirements without-torch)
    else
      index="$TORCH_INDEX"
      [[ -z "$index" && $CPU_ONLY == 0 && -z "$WHEELS" ]] && index="$(cuda_index)"
      [[ "$index" == unsupported* ]] && { echo "install: $index"; return 1; }
      echo "install: torch from ${WHEELS:-${index:-the default index}}"
      "$VENV/bin/python" -m pip install -q "${pip_opts[@]}" ${index:+--extra-index-url "$index"} \
        $(requirements with-torch)
    fi
    # the project itself, without its pins: a GPU image's torch may be older than pyproject's;
    # built with the setuptools already there when there is one (no download)
    "$VENV/bin/python" -c 'import setuptools' 2>/dev/null && pip_opts+=(--no-build-isolation)
    "$VENV/bin/python" -m pip install -q "${pip_opts[@]}" --no-deps -e "$ROOT"
  fi
  "$VENV/bin/python" - > "$OUT/environment.json" <<'EOF'
import json, platform, subprocess, torch, dcganlab
smi = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                     capture_output=True, text=True).stdout.strip().splitlines() if torch.cuda.is_available() else []
print(json.dumps({"python": platform.python_version(), "torch": torch.__version__, "torch_cuda": torch.version.cuda,
                  "cuda_available": torch.cuda.is_available(), "gpus": smi, "dcganlab": dcganlab.__file__}))
EOF
  cat "$OUT/environment.json"
  # nvidia-smi sees a GPU but torch does not (a CPU-only torch, a driver too old for its CUDA):
  # fail here, or every `gpu` test would skip and the GPU steps would run on the CPU
  if [[ $CPU_ONLY == 0 ]] && ! "$VENV/bin/python" -c 'import torch, sys; sys.exit(not torch.cuda.is_available())'; then
    echo "error: nvidia-smi lists $GPUS GPU(s) but torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)') sees no CUDA device" >&2
    return 1
  fi
}

# ---------------------------------------------------------------- 2.-5.
gpu_tests() {
  local rc=0
  (cd "$ROOT" && "$VENV/bin/python" -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider \
    --junitxml "$OUT/pytest-gpu.xml") || rc=$?
  if [[ -f "$OUT/pytest-gpu.xml" ]]; then
    "$VENV/bin/python" -m dcganlab.bench.gpu_check tests "$OUT/pytest-gpu.xml" "$OUT/tests.json"
    cat "$OUT/tests.json"; echo
  fi
  return $rc
}

bench() {
  (cd "$ROOT" && "$VENV/bin/python" -m dcganlab bench --gpu -p "$ROOT/params.yaml" --out "$ROOT/reports/bench-gpu.json")
  cp "$ROOT/reports/bench-gpu.json" "$OUT/bench-gpu.json"
}

# a copy of params.yaml in a scratch folder, with `key=value` YAML edits
scratch_project() {
  local dir="$1"; shift
  mkdir -p "$dir"
  "$VENV/bin/python" - "$ROOT/params.yaml" "$dir/params.yaml" "$@" <<'EOF'
import sys, yaml
raw = yaml.safe_load(open(sys.argv[1]))
for edit in sys.argv[3:]:
    key, value = edit.split("=", 1)
    node, *path = raw, *key.split(".")
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = int(value) if value.isdigit() else {"true": True, "false": False}.get(value, value)  # "off" stays a string
open(sys.argv[2], "w").write(yaml.safe_dump(raw, sort_keys=False))
EOF
}

train_and_compare() {  # on the CPU with --cpu-only --epochs N: the same steps, a check of the step itself
  local dir="$WORK/quality" p edits=("train.device=$( ((CPU_ONLY)) && echo cpu || echo cuda)" evaluate.inception=off)
  [[ -n "$EPOCHS" ]] && edits+=("experiments.digits-dcgan.epochs=$EPOCHS")
  scratch_project "$dir" "${edits[@]}"
  p="$dir/params.yaml"
  for cmd in "fetch digits" "prepare digits" "extractor digits" "train digits-dcgan" "evaluate digits-dcgan"; do
    (cd "$dir" && "$VENV/bin/python" -m dcganlab $cmd -p "$p") || return 1
  done
  "$VENV/bin/python" -m dcganlab.bench.gpu_check quality "$dir/reports/eval/digits-dcgan.json" \
    "$ROOT/reports/metrics.json" digits-dcgan "$OUT/quality.json"
}

ddp() {
  local dir="$WORK/ddp"
  scratch_project "$dir" train.device=cuda experiments.digits-dcgan.epochs=2 train.log_model=false
  (cd "$dir" && "$VENV/bin/python" -m dcganlab fetch digits -p "$dir/params.yaml" \
    && "$VENV/bin/python" -m dcganlab prepare digits -p "$dir/params.yaml" \
    && "$VENV/bin/python" -m torch.distributed.run --standalone --nproc_per_node 2 \
       -m dcganlab train digits-dcgan -p "$dir/params.yaml") || return 1
  cp "$dir/reports/digits-dcgan/train.json" "$OUT/ddp.json"
}

WORK="$(mktemp -d "${TMPDIR:-/tmp}/dcganlab-gpu-check.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
echo "gpu_check: $(date -u +%FT%TZ), $GPUS GPU(s), out $OUT"

NEW_VENV=$([[ -x "$VENV/bin/python" ]] && echo 0 || echo 1)
step install install
INSTALLED=$LAST_RC
if [[ $INSTALLED != 0 && $NEW_VENV == 1 ]]; then
  rm -rf "$VENV"  # half-installed: the next run must not reuse it
fi

# run_or_skip NAME FUNCTION WHY: the step, or a skipped one saying WHY when WHY is not empty
run_or_skip() {
  if [[ -n "$3" ]]; then skip "$1" "$3"; else step "$1" "$2"; fi
}
no_install=$([[ $INSTALLED != 0 ]] && echo "install failed" || true)
cpu_only=$([[ $CPU_ONLY == 1 ]] && echo "--cpu-only" || true)
run_or_skip "tests marked gpu" gpu_tests "$no_install"
run_or_skip "bench --gpu" bench "${no_install:-$cpu_only}"
if [[ $CPU_ONLY == 1 && -n "$EPOCHS" ]]; then
  run_or_skip "train digits-dcgan on the CPU (--cpu-only), quality vs the CPU run" train_and_compare "$no_install"
else
  run_or_skip "train digits-dcgan on the GPU, quality vs the CPU run" train_and_compare "${no_install:-$cpu_only}"
fi
few_gpus=$([[ $GPUS -lt 2 ]] && echo "$GPUS GPU(s) listed by nvidia-smi" || true)
run_or_skip "torchrun --nproc_per_node 2 (NCCL)" ddp "${no_install:-$few_gpus}"

"$PY" -m dcganlab.bench.gpu_check summary "$OUT" || FAILED=1  # the base interpreter: the venv may be broken
echo "gpu_check: $(( $(date +%s) - START )) s; $( ((FAILED)) && echo FAILED || echo passed ) -> $OUT/gpu-check.json"
exit $FAILED

#!/usr/bin/env bash
# Two queued DVC experiments, one after the other (`dvc queue start -j 1`) and at once (`-j 2`):
# does running them together cost anything? (docs/performance.md, "Sharing the CPU")
#
# In a temporary clone of this checkout, with params.yaml cut to the digits dataset and the
# digits-dcgan experiment: `dvc repro` once (the baseline), then twice two experiments that each
# retrain digits-dcgan with another seed (seed_offset), sample, evaluate and report it.
# Usage: bash scripts/queue_share.sh [EPOCHS]   (default: params.yaml's 30). Needs .venv (scripts/install.sh).
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)"
export PATH="$src/.venv/bin:$PATH"
epochs="${1:-}"
wait_for() {  # the named experiments' queue status: Success (exit 0) or Failed (exit 1)
  python - "$@" <<'EOF2'
import subprocess, sys, time
names = sys.argv[1:]
while True:
    status = subprocess.run(["dvc", "queue", "status"], capture_output=True, text=True).stdout
    rows = {ln.split()[1]: ln.split()[-1] for ln in status.splitlines() if len(ln.split()) > 2 and ln.split()[1] in names}
    if any(s == "Failed" for s in rows.values()):
        sys.exit(status)
    if len(rows) == len(names) and all(s == "Success" for s in rows.values()):
        break
    time.sleep(3)  # `dvc queue status` itself takes about a second of CPU
EOF2
}
stop_workers() {
  dvc queue stop --kill >/dev/null 2>&1 || true
  for _ in $(seq 60); do dvc queue status 2>/dev/null | grep -q "0 active, 0 idle" && break; sleep 1; done
}
run() {  # $1: jobs; $2, $3: seed offsets. Prints the seconds from `dvc queue start` to both done.
  dvc exp run --queue -q -n "seed$2" -S "experiments.digits-dcgan.seed_offset=$2" >/dev/null
  dvc exp run --queue -q -n "seed$3" -S "experiments.digits-dcgan.seed_offset=$3" >/dev/null
  local t0; t0=$(date +%s.%N)
  dvc queue start -j "$1" >/dev/null
  wait_for "seed$2" "seed$3"
  python -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$t0" "$(date +%s.%N)"
  stop_workers
}
work="$(mktemp -d)"
trap 'cd /; (cd "$work/p" 2>/dev/null && stop_workers); rm -rf "$work"' EXIT
git clone -q "$src" "$work/p"
cd "$work/p"
export PYTHONPATH="$work/p/src"  # the clone's code, whatever the venv's editable install points at
python - "$epochs" <<'EOF'
import sys, yaml
raw = yaml.safe_load(open("params.yaml"))
raw["datasets"] = {"digits": raw["datasets"]["digits"]}
raw["experiments"] = {"digits-dcgan": raw["experiments"]["digits-dcgan"]}
if sys.argv[1]:
    raw["experiments"]["digits-dcgan"]["epochs"] = int(sys.argv[1])
yaml.safe_dump(raw, open("params.yaml", "w"), sort_keys=False)
EOF
git commit -qam "queue_share: digits-dcgan only"
dvc repro -q >/dev/null
git add -A >/dev/null; git commit -qm baseline >/dev/null
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); avx512_bf16: $(grep -c avx512_bf16 /proc/cpuinfo || true)"
echo "isa: $(python -c 'from dcganlab.training.accel import cpu_path; print(cpu_path())')"
serial=$(run 1 1 2)
together=$(run 2 3 4)
echo "two queued experiments: -j 1 ${serial} s, -j 2 ${together} s (serial / together = $(python -c "print(f'{$serial / $together:.2f}')"))"

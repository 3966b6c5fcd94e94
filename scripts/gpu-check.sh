#!/usr/bin/env bash
# The GPU check: every GPU test and the split-mnist SI run on both devices, from binaries built
# on a development machine (the GPU machine has no Rust toolchain and no network).
#
#   scripts/gpu-check.sh bundle [DIR]   on the development machine: builds engram and the test
#                                       executables with --features cuda, strips them and puts them
#                                       in DIR (default gpu-bundle/, ignored by git) with MNIST
#   scripts/gpu-check.sh run [DIR]      on the GPU machine: runs everything, full logs under
#                                       $OUT (or DIR/logs), a short table last; exit 1 if any
#                                       step failed
#
# What runs (each step under its own time limit, 7.5 minutes at most in all; its time on the GPU
# machine has not been measured yet):
#   nvrtc      every kernels/*.cu compiled for the GPU's architecture, registers / spills table
#   kernels    every backend kernel against the CPU backend and a host reference (proptest)
#   fused      the consolidation kernels (the fused step in all its variants) against the CPU
#   runs       split-mnist SI on CUDA vs CPU (ACC within 0.3 points, two GPU runs bit-identical),
#              every method on a short protocol, checkpoints moved between the GPU and the CPU
#   run cuda / run cpu   `engram run --scenario split-mnist --method si` on each device
# ENGRAM_REQUIRE_GPU=1 and ENGRAM_REQUIRE_NVRTC=1 are set: a test cannot pass by skipping.
set -uo pipefail

mode=${1:-run}
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${2:-$root/gpu-bundle}

bundle() {
    local data=${ENGRAM_DATA:-$root/../shared/data/mnist}
    [ -f "$data/train-images-idx3-ubyte.gz" ] || { echo "MNIST not found in $data (set ENGRAM_DATA)" >&2; exit 2; }
    cd "$root" || exit 2
    local target=target/cuda
    cargo build --release --features cuda --target-dir "$target" --bin engram || exit 2
    rm -rf "$dir" && mkdir -p "$dir/tests" "$dir/mnist" || exit 2
    strip -o "$dir/engram" "$target/release/engram" || exit 2
    # One executable per (crate, test file); cargo prints their paths as JSON.
    cargo test --release --features cuda --target-dir "$target" --no-run --message-format=json \
        -p engram-tape -p engram-si -p engram-cl --test device --test nvrtc 2>/dev/null |
        python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        crate = m["package_id"].split("#")[-1].split("@")[0].split("/")[-1].replace("engram-", "")
        print(crate + "-" + m["target"]["name"], m["executable"])
' | while read -r name exe; do strip -o "$dir/tests/$name" "$exe" || exit 2; done
    cp "$data"/*.gz "$data"/SHA256SUMS "$dir/mnist/" 2>/dev/null || cp "$data"/*.gz "$dir/mnist/"
    cp "$0" "$dir/gpu-check.sh"
    for t in tape-nvrtc tape-device si-device cl-device; do
        [ -x "$dir/tests/$t" ] || { echo "missing test executable $t" >&2; exit 2; }
    done
    du -sh "$dir"
    echo "bundle ready in $dir: on the GPU machine, run \`scripts/gpu-check.sh run\` from the repository root"
}

# Puts the folders of libnvrtc.so.13 and libcublas.so.13 (system, or the Python wheels of the
# `nvidia` package, as PyTorch installs them) on LD_LIBRARY_PATH.
find_libraries() {
    local lib dirs=""
    for lib in libnvrtc.so.13 libcublas.so.13; do
        if ldconfig -p 2>/dev/null | grep -q "$lib"; then continue; fi
        local found
        found=$(python3 - "$lib" 2>/dev/null <<'EOF'
import os, sys
try:
    import nvidia
except ImportError:
    sys.exit(0)
for base in nvidia.__path__:
    for top, _, files in os.walk(base):
        if sys.argv[1] in files:
            print(top)
            sys.exit(0)
EOF
)
        [ -n "$found" ] && dirs="$dirs:$found"
    done
    dirs="${dirs#:}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    export LD_LIBRARY_PATH="${dirs#:}"
}

run_checks() {
    [ -x "$dir/engram" ] || { echo "no bundle in $dir: run \`scripts/gpu-check.sh bundle\` on the development machine" >&2; exit 2; }
    local logs=${OUT:-$dir/logs}
    mkdir -p "$logs"
    find_libraries
    export ENGRAM_DATA="$dir/mnist" ENGRAM_REQUIRE_GPU=1 ENGRAM_REQUIRE_NVRTC=1 RUST_BACKTRACE=1
    local rows=() failed=0
    step() { # name limit log command...
        local name=$1 limit=$2 log=$3
        shift 3
        local t0=$SECONDS
        timeout "$limit" "$@" >"$logs/$log" 2>&1
        local rc=$? secs=$((SECONDS - t0))
        local detail
        detail=$(grep -E "^test result:" "$logs/$log" | tail -1 | sed -E 's/^test result: ([a-zA-Z]+)\. ([0-9]+) passed; ([0-9]+) failed.*/\2 passed, \3 failed/')
        [ -n "$detail" ] || detail=$(grep -v "^\s*$" "$logs/$log" | tail -1 | cut -c1-110)
        local status=pass
        if [ $rc -eq 124 ]; then status="TIMEOUT"; elif [ $rc -ne 0 ]; then status="FAIL (rc $rc)"; fi
        [ "$status" = pass ] || failed=1
        rows+=("$(printf '%-10s %-14s %5ss  %s' "$name" "$status" "$secs" "$detail")")
        echo "== $name: $status in ${secs}s (log $logs/$log)"
    }
    {
        echo "date: $(date -u +%FT%TZ)"
        nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader 2>&1
        echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
        nproc
    } | tee "$logs/machine.txt"
    step nvrtc 60 nvrtc.log "$dir/tests/tape-nvrtc" --nocapture
    step kernels 60 kernels.log "$dir/tests/tape-device" cuda
    step fused 60 fused.log "$dir/tests/si-device" cuda
    step runs 150 runs.log "$dir/tests/cl-device" --nocapture --test-threads 1
    step "run cuda" 60 run-cuda.log "$dir/engram" run --scenario split-mnist --method si --device cuda --out "$logs/run-cuda.json"
    step "run cpu" 60 run-cpu.log "$dir/engram" run --scenario split-mnist --method si --device cpu --out "$logs/run-cpu.json"

    echo
    echo "--- nvrtc: per kernel (registers, shared memory, spills) ---"
    sed -n '/^kernel /,/kernels compiled/p' "$logs/nvrtc.log"
    echo "--- whole runs (tests) ---"
    grep -E "ACC|checkpoint" "$logs/runs.log"
    echo "--- GPU check: table ---"
    printf '%-10s %-14s %6s  %s\n' step status time detail
    local r
    for r in "${rows[@]}"; do echo "$r"; done
    for d in cuda cpu; do
        [ -f "$logs/run-$d.json" ] && python3 - "$logs/run-$d.json" "$d" <<'EOF'
import json, sys
v = json.load(open(sys.argv[1]))
print(f"split-mnist SI on {sys.argv[2]:4}: ACC {100 * v['acc']:.2f}, wall {v['wall_seconds']:.1f} s ({v.get('device', '?')})")
EOF
    done
    return $failed
}

case $mode in
    bundle) bundle ;;
    run) run_checks ;;
    *) echo "usage: scripts/gpu-check.sh bundle|run [DIR]" >&2; exit 2 ;;
esac

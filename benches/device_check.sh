#!/usr/bin/env bash
# Benchmarks for a machine with a GPU: one script, so that a short lease of
# a GPU machine is spent measuring, not typing. Writes its results under
# ${OUT:-bench-results}/ and prints them.
#
#   bash benches/device_check.sh            # all steps
#   QUICK=1 bash benches/device_check.sh    # skip the criterion benches
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-bench-results}"
mkdir -p "$out"

{
    date -u
    uname -a
    nproc
    lscpu | grep -E "Model name|^CPU\(s\)|Flags" | cut -c1-200 || true
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null || true
} > "$out/machine.txt" 2>&1
cat "$out/machine.txt"

cargo build --release --locked 2>&1 | tail -2
./target/release/wgpu-learn devices | tee "$out/devices.txt"

# GPU results against the CPU path, on this machine's adapters.
cargo test --release --locked --test gpu_kernels --test gpu_backend --test gpu_mnist --test gpu_network 2>&1 | tee "$out/gpu-tests.txt" | grep -E "^test result|FAILED|panicked" || true

# The classic protocol on every path, then a fixed 20 epochs.
./target/release/wgpu-learn bench --drop-last --repeat 3 --json "$out/bench-classic.json" | tee "$out/bench-classic.txt"
./target/release/wgpu-learn bench --epochs 20 --repeat 3 --json "$out/bench-20-epochs.json" | tee "$out/bench-20-epochs.txt"
./target/release/wgpu-learn bench --epochs 2 --repeat 1 --scaling | tee "$out/bench-scaling.txt"

# The fast MLP recipe on the GPU and on the CPU, for the network engines of both paths.
recipe=(--model mlp --hidden 800 --activation relu --optimizer nesterov --momentum 0.9
    --learning-rate 0.1 --batch-size 100 --epochs 15 --schedule cosine --shuffle --seed 1 --quiet)
for path in gpu cpu; do
    ./target/release/wgpu-learn train --backend "$path" "${recipe[@]}" -o "$out/mlp-$path.safetensors" \
        2>&1 | tee "$out/mlp-recipe-$path.txt"
done

if [ -z "${QUICK:-}" ]; then
    cargo bench --locked --bench kernels -- --warm-up-time 1 --measurement-time 3 2>&1 | tee "$out/criterion.txt" | grep -E "^[a-z_]+/|time:|thrpt:" || true
fi

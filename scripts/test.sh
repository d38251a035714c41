#!/usr/bin/env bash
# Runs every test through CTest: the GoogleTest suite (GPU cases skip without CUDA) and the
# sanitized parser fuzzer over 200k mutated inputs.
set -euo pipefail
cd "$(dirname "$0")/.."
ctest --test-dir build --output-on-failure -j "$(nproc)"

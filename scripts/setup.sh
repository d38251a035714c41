#!/usr/bin/env bash
# Installs everything kvforge needs on a fresh Debian 12 machine and builds it:
#   Debian packages (compiler, CMake, Ninja, ccache, Eigen, CLI11, yaml-cpp, GoogleTest,
#   nlohmann-json, PCRE2, utf8proc), torch==2.11.0 from pip into ./.venv (for LibTorch's CMake config),
#   then configures and builds ./build. Safe to re-run; ccache keeps rebuilds short.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(build-essential cmake ninja-build ccache pkg-config python3-venv libgloo-dev
          libeigen3-dev libcli11-dev libyaml-cpp-dev libgtest-dev libgmock-dev nlohmann-json3-dev libpcre2-dev
          libutf8proc-dev)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}"
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
if ! .venv/bin/python -c 'import torch, sys; sys.exit(torch.__version__.split("+")[0] != "2.11.0")' 2>/dev/null; then
  .venv/bin/pip install -q --disable-pip-version-check torch==2.11.0
fi
torch_cmake=$(.venv/bin/python -c 'import torch; print(torch.utils.cmake_prefix_path)')

# nvcc is found on PATH or in the default CUDA location; kernels build for Hopper (sm_90a).
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then export PATH=/usr/local/cuda/bin:$PATH; fi
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0a}
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$torch_cmake" >build-configure.log 2>&1 \
  || { cat build-configure.log; exit 1; }
cmake --build build -j "$(nproc)"

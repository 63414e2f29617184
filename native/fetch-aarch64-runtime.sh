#!/usr/bin/env bash
# Unpack the TVM runtime (headers, libtvm_runtime.so, libtvm_ffi.so) of the aarch64 wheels pinned in
# constraints.txt into DEST, for cross-building the native runner:  native/fetch-aarch64-runtime.sh PIP DEST
set -euo pipefail
pip=$1 dest=$2
versions=$(grep -E '^apache-tvm(-ffi)?==' "$(dirname "$0")/../constraints.txt")
mkdir -p "$dest/wheels"
"$pip" download -q --no-deps --only-binary=:all: --implementation cp --python-version 3.11 \
    --platform manylinux_2_28_aarch64 --platform manylinux_2_24_aarch64 -d "$dest/wheels" $versions
unzip -q -o "$dest"/wheels/apache_tvm-*.whl 'tvm/include/*' tvm/lib/libtvm_runtime.so -d "$dest"
unzip -q -o "$dest"/wheels/apache_tvm_ffi-*.whl 'tvm_ffi/include/*' 'tvm_ffi/3rdparty/dlpack/*' \
    tvm_ffi/lib/libtvm_ffi.so -d "$dest"

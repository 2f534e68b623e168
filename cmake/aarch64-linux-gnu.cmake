# Cross-compiling for linux-arm64 (aarch64, glibc) on an x86-64 Linux host with
# Debian's g++-aarch64-linux-gnu (apt-get install g++-aarch64-linux-gnu).
# Used by `npm run prebuild` (scripts/cmake-js-rebuild.js --arch=arm64) and
# `npm run test:arm64` (scripts/test-cpp.js --arch arm64); see docs/install.md.
#
#   cmake -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake ...
#   AARCH64_CROSS_PREFIX=/opt/x/bin/aarch64-linux-gnu-   another toolchain
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

if(DEFINED ENV{AARCH64_CROSS_PREFIX})
  set(_nc_prefix "$ENV{AARCH64_CROSS_PREFIX}")
else()
  set(_nc_prefix "aarch64-linux-gnu-")
endif()
set(CMAKE_C_COMPILER "${_nc_prefix}gcc")
set(CMAKE_CXX_COMPILER "${_nc_prefix}g++")
set(CMAKE_STRIP "${_nc_prefix}strip")

# Libraries and headers come from the cross toolchain's sysroot only; programs
# (node, for node-addon-api's include path) from the host.
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

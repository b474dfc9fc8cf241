# Cross-build for 64-bit Arm Linux (Jetson's CPU, Raspberry Pi 4/5, Graviton) with Debian's cross compiler:
#
#   apt-get install g++-aarch64-linux-gnu qemu-user
#   cmake -S native -B build-aarch64 -G Ninja -DCMAKE_TOOLCHAIN_FILE=native/cmake/aarch64-linux-gnu.cmake \
#         -DGATEKIT_OPS_OV=OFF
#   cmake --build build-aarch64 -j2 --target gatekit_ort_ops gatekit_kernel_selfcheck gatekit_ort_run
#   qemu-aarch64 -L /usr/aarch64-linux-gnu build-aarch64/gatekit_kernel_selfcheck
#
# Only the portable kernel path is compiled (NEON through vector extensions, see kernel/isa_portable.cpp).
# GATEKIT_AARCH64_SYSROOT overrides the target's root (default /usr/aarch64-linux-gnu, Debian's layout).
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

set(GATEKIT_AARCH64_PREFIX "aarch64-linux-gnu-" CACHE STRING "Prefix of the cross compiler's commands")
set(GATEKIT_AARCH64_SYSROOT "/usr/aarch64-linux-gnu" CACHE PATH "Root of the aarch64 libraries and headers")
set(CMAKE_C_COMPILER "${GATEKIT_AARCH64_PREFIX}gcc")
set(CMAKE_CXX_COMPILER "${GATEKIT_AARCH64_PREFIX}g++")

set(CMAKE_FIND_ROOT_PATH "${GATEKIT_AARCH64_SYSROOT}")
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

# Test programs built here run under user-mode emulation on an x86 host.
find_program(GATEKIT_QEMU_AARCH64 qemu-aarch64)
if(GATEKIT_QEMU_AARCH64)
  set(CMAKE_CROSSCOMPILING_EMULATOR "${GATEKIT_QEMU_AARCH64};-L;${GATEKIT_AARCH64_SYSROOT}")
endif()

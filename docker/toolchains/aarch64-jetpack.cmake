# CMake toolchain file: cross-compile deploy/ on an x86_64 host for an aarch64 Jetson running JetPack
# (Jetson Linux; JetPack 6.x has an Ubuntu 22.04 userspace, CUDA 12.6 and TensorRT 10.3).
#
#   cmake -S deploy -B build-jetson \
#         -DCMAKE_TOOLCHAIN_FILE=docker/toolchains/aarch64-jetpack.cmake \
#         -DJETPACK_SYSROOT=/opt/jetpack-sysroot          # or: export JETPACK_SYSROOT=/opt/jetpack-sysroot
#
# Settings (cache variables, given with -D):
#   JETPACK_SYSROOT       aarch64 root filesystem holding glibc, libstdc++ and TensorRT's headers/libraries
#                         (usr/include/aarch64-linux-gnu/NvInfer.h, usr/lib/aarch64-linux-gnu/libnvinfer.so).
#                         Falls back to the environment variable JETPACK_SYSROOT. Required.
#   JETPACK_CROSS_PREFIX  prefix of the cross compilers, default "aarch64-linux-gnu-" (Ubuntu/Debian's
#                         g++-aarch64-linux-gnu); e.g. "/opt/l4t-gcc/bin/aarch64-buildroot-linux-gnu-" for the
#                         Bootlin toolchain of Jetson Linux. -DCMAKE_C_COMPILER=/-DCMAKE_CXX_COMPILER= override it.
#   JETPACK_CUDA_ROOT     CUDA toolkit on the host whose targets/aarch64-linux holds the aarch64 CUDA headers and
#                         libraries (the cuda-cross-aarch64 package), default /usr/local/cuda.
#   JETPACK_CORE_ONLY     ON: accept a sysroot without TensorRT and build only the TensorRT-free core (its tests
#                         can then run under qemu-aarch64). Default OFF: a sysroot without NvInfer.h is an error,
#                         because the point of cross-compiling is the TensorRT runner, edgecompress-runner.
#
# Checked against (read, not copied):
# - CMake's cross-compiling guide, https://cmake.org/cmake/help/latest/manual/cmake-toolchains.7.html
#   (CMAKE_SYSROOT, CMAKE_FIND_ROOT_PATH and the CMAKE_FIND_ROOT_PATH_MODE_* variables).
# - TensorRT OSS, cmake/toolchains/cmake_aarch64.toolchain and docker/ubuntu-cross-aarch64.Dockerfile at the 10.3
#   release (github.com/NVIDIA/TensorRT, commit 84dd6ed1): aarch64-linux-gnu-g++, CUDA from
#   /usr/local/cuda-<ver>/targets/aarch64-linux, TensorRT's aarch64 .debs unpacked into a sysroot.
# - NVIDIA cuda-samples, cmake/toolchains/toolchain-aarch64-linux.cmake: CMAKE_SYSROOT from a copy of the Jetson's
#   root filesystem, the CUDA target directory added to CMAKE_FIND_ROOT_PATH, -rpath-link into the sysroot.
# - CMake's FindCUDAToolkit: when cross-compiling for aarch64 it looks in <CUDAToolkit_ROOT>/targets/aarch64-linux.

set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

# try_compile() projects read this file again and see only the variables listed here.
list(APPEND CMAKE_TRY_COMPILE_PLATFORM_VARIABLES
     JETPACK_SYSROOT JETPACK_CROSS_PREFIX JETPACK_CUDA_ROOT JETPACK_CORE_ONLY)

set(JETPACK_CROSS_PREFIX "aarch64-linux-gnu-" CACHE STRING "Prefix of the aarch64 cross compilers")
set(JETPACK_CUDA_ROOT "/usr/local/cuda" CACHE PATH "Host CUDA toolkit with targets/aarch64-linux (cuda-cross-aarch64)")
option(JETPACK_CORE_ONLY "Accept a sysroot without TensorRT: build only the TensorRT-free core" OFF)

if(NOT CMAKE_C_COMPILER)
  set(CMAKE_C_COMPILER "${JETPACK_CROSS_PREFIX}gcc")
endif()
if(NOT CMAKE_CXX_COMPILER)
  set(CMAKE_CXX_COMPILER "${JETPACK_CROSS_PREFIX}g++")
endif()

if(NOT JETPACK_SYSROOT AND DEFINED ENV{JETPACK_SYSROOT})
  set(JETPACK_SYSROOT "$ENV{JETPACK_SYSROOT}")
endif()
set(JETPACK_SYSROOT "${JETPACK_SYSROOT}" CACHE PATH "aarch64 JetPack root filesystem (glibc, libstdc++, TensorRT)")

# Fail here, at configure time, rather than with a missing header halfway through the build.
set(_jetpack_how "docker/README.md says how to make one (docker/jetson-cross/Dockerfile builds it)")
if(NOT JETPACK_SYSROOT)
  message(FATAL_ERROR
    "aarch64-jetpack: no sysroot given: pass -DJETPACK_SYSROOT=/path/to/jetpack-sysroot or set the environment "
    "variable JETPACK_SYSROOT; ${_jetpack_how}")
endif()
if(NOT IS_DIRECTORY "${JETPACK_SYSROOT}/usr/include")
  message(FATAL_ERROR
    "aarch64-jetpack: JETPACK_SYSROOT=${JETPACK_SYSROOT} is not an aarch64 root filesystem "
    "(${JETPACK_SYSROOT}/usr/include is missing); ${_jetpack_how}")
endif()
if(NOT EXISTS "${JETPACK_SYSROOT}/usr/include/aarch64-linux-gnu/NvInfer.h")
  if(NOT JETPACK_CORE_ONLY)
    message(FATAL_ERROR
      "aarch64-jetpack: JETPACK_SYSROOT=${JETPACK_SYSROOT} has no TensorRT headers "
      "(usr/include/aarch64-linux-gnu/NvInfer.h): unpack JetPack's libnvinfer-dev into it (${_jetpack_how}), "
      "or pass -DJETPACK_CORE_ONLY=ON to cross-build only the TensorRT-free core")
  endif()
  message(STATUS "aarch64-jetpack: no TensorRT in ${JETPACK_SYSROOT}: JETPACK_CORE_ONLY builds the TensorRT-free core only")
endif()
unset(_jetpack_how)

set(CMAKE_SYSROOT "${JETPACK_SYSROOT}")
set(CMAKE_FIND_ROOT_PATH "${JETPACK_SYSROOT}")

# aarch64 CUDA: on the host from cuda-cross-aarch64 (<cuda>/targets/aarch64-linux), or inside the sysroot when it
# is a copy of the Jetson's own root filesystem (/usr/local/cuda-<ver>/targets/aarch64-linux there).
file(GLOB _jetpack_sysroot_cuda LIST_DIRECTORIES true "${JETPACK_SYSROOT}/usr/local/cuda*/targets/aarch64-linux")
foreach(_jetpack_cuda_target IN LISTS _jetpack_sysroot_cuda ITEMS "${JETPACK_CUDA_ROOT}/targets/aarch64-linux")
  if(IS_DIRECTORY "${_jetpack_cuda_target}")
    list(APPEND CMAKE_FIND_ROOT_PATH "${_jetpack_cuda_target}")
  endif()
endforeach()
if(IS_DIRECTORY "${JETPACK_CUDA_ROOT}/targets/aarch64-linux" AND NOT DEFINED CUDAToolkit_ROOT)
  # find_package(CUDAToolkit) runs the host nvcc from here and then searches targets/aarch64-linux.
  set(CUDAToolkit_ROOT "${JETPACK_CUDA_ROOT}")
endif()
unset(_jetpack_sysroot_cuda)
unset(_jetpack_cuda_target)

# Host programs (cmake, nvcc, python) from the host; headers, libraries and packages only from the target.
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

# Debian multiarch directories of the target, searched whatever architecture the compiler reports.
list(APPEND CMAKE_INCLUDE_PATH /usr/include/aarch64-linux-gnu)
list(APPEND CMAKE_LIBRARY_PATH /usr/lib/aarch64-linux-gnu /lib/aarch64-linux-gnu)
list(REMOVE_DUPLICATES CMAKE_INCLUDE_PATH)
list(REMOVE_DUPLICATES CMAKE_LIBRARY_PATH)

# libnvinfer.so's own dependencies (libcudart, the L4T driver libraries under nvidia/ or tegra/) are resolved in
# the sysroot at link time, not on the host. (CMake may read this file twice: the flags are set, not appended.)
set(_jetpack_rpath_link "")
foreach(_jetpack_libdir usr/lib/aarch64-linux-gnu lib/aarch64-linux-gnu usr/lib/aarch64-linux-gnu/nvidia
                        usr/lib/aarch64-linux-gnu/tegra)
  string(APPEND _jetpack_rpath_link " -Wl,-rpath-link,${JETPACK_SYSROOT}/${_jetpack_libdir}")
endforeach()
set(CMAKE_EXE_LINKER_FLAGS_INIT "${_jetpack_rpath_link}")
set(CMAKE_SHARED_LINKER_FLAGS_INIT "${_jetpack_rpath_link}")
unset(_jetpack_libdir)
unset(_jetpack_rpath_link)

"""docker/toolchains/aarch64-jetpack.cmake configures here, with the host's g++ standing in for the cross compiler.

No aarch64 compiler and no JetPack are installed on this machine, so the sysroot is a stub made in tmp_path with
JetPack's layout: the host's C/C++ headers linked in (so the host g++ finds <pthread.h> under --sysroot), an empty
usr/include/aarch64-linux-gnu/NvInfer.h and usr/lib/aarch64-linux-gnu/libnvinfer.so where JetPack puts TensorRT's.
Only configure runs; nothing is built.
"""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOOLCHAIN = ROOT / "docker" / "toolchains" / "aarch64-jetpack.cmake"
DEPLOY = ROOT / "deploy"

CMAKE = shutil.which("cmake")
HOST_CXX = shutil.which("g++")
HOST_CC = shutil.which("gcc")
pytestmark = pytest.mark.skipif(CMAKE is None or HOST_CXX is None or HOST_CC is None,
                                reason="cmake, gcc and g++ are needed (make setup installs them)")

# Finds what deploy/ will need from the sysroot and records what it found in the cache.
PROBE_PROJECT = """\
cmake_minimum_required(VERSION 3.18)
project(probe C CXX)
find_package(Threads REQUIRED)
find_path(PROBE_NVINFER_INCLUDE NvInfer.h)
find_library(PROBE_NVINFER_LIBRARY nvinfer)
find_path(PROBE_CUDA_INCLUDE cuda_runtime_api.h)
find_program(PROBE_HOST_CMAKE cmake)
add_executable(probe main.cpp)
"""


def make_sysroot(root: Path, tensorrt: bool = True) -> Path:
    """A stub JetPack sysroot: JetPack's folder layout, the host's headers linked in for the host compiler."""
    include = root / "usr" / "include"
    include.mkdir(parents=True)
    for entry in Path("/usr/include").iterdir():
        if entry.name != "aarch64-linux-gnu":
            (include / entry.name).symlink_to(entry)
    (root / "usr" / "lib" / "aarch64-linux-gnu").mkdir(parents=True)
    if tensorrt:
        (include / "aarch64-linux-gnu").mkdir()
        (include / "aarch64-linux-gnu" / "NvInfer.h").write_text("// layout stub: JetPack's libnvinfer-dev puts the header here\n")
        (root / "usr" / "lib" / "aarch64-linux-gnu" / "libnvinfer.so").write_bytes(b"")
    return root


def make_cuda_cross(root: Path) -> Path:
    """A stub of the host CUDA that cuda-cross-aarch64 installs: the aarch64 files under targets/aarch64-linux."""
    target = root / "targets" / "aarch64-linux"
    (target / "include").mkdir(parents=True)
    (target / "lib").mkdir()
    for header in ("cuda_runtime.h", "cuda_runtime_api.h"):
        (target / "include" / header).write_text("// layout stub: cuda-cudart-cross-aarch64 puts it here\n")
    (target / "lib" / "libcudart.so").write_bytes(b"")
    return root


def configure(source: Path, build: Path, *options: str, env: dict | None = None) -> subprocess.CompletedProcess:
    command = [CMAKE, "-S", str(source), "-B", str(build), f"-DCMAKE_TOOLCHAIN_FILE={TOOLCHAIN}",
               f"-DCMAKE_C_COMPILER={HOST_CC}", f"-DCMAKE_CXX_COMPILER={HOST_CXX}", *options]
    environment = {key: value for key, value in os.environ.items() if key not in ("JETPACK_SYSROOT", "CMAKE_TOOLCHAIN_FILE")}
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env={**environment, **(env or {})})


def cache(build: Path) -> dict[str, str]:
    entries = {}
    for line in (build / "CMakeCache.txt").read_text().splitlines():
        match = re.match(r"^([A-Za-z_][\w.-]*):\w+=(.*)$", line)
        if match:
            entries[match.group(1)] = match.group(2)
    return entries


def configured_processor(build: Path) -> str:
    """CMAKE_SYSTEM_PROCESSOR as the configure recorded it (CMakeFiles/<version>/CMakeSystem.cmake; CMake keeps it
    there, not in CMakeCache.txt)."""
    (system_file,) = build.glob("CMakeFiles/*/CMakeSystem.cmake")
    return re.search(r'set\(CMAKE_SYSTEM_PROCESSOR "([^"]*)"\)', system_file.read_text()).group(1)


@pytest.fixture
def probe(tmp_path) -> Path:
    source = tmp_path / "probe"
    source.mkdir()
    (source / "CMakeLists.txt").write_text(PROBE_PROJECT)
    (source / "main.cpp").write_text("int main() { return 0; }\n")
    return source


def test_a_project_configures_for_aarch64_against_the_sysroot(tmp_path, probe):
    sysroot = make_sysroot(tmp_path / "sysroot")
    cuda = make_cuda_cross(tmp_path / "cuda")
    build = tmp_path / "build"
    result = configure(probe, build, f"-DJETPACK_SYSROOT={sysroot}", f"-DJETPACK_CUDA_ROOT={cuda}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert configured_processor(build) == "aarch64"
    entries = cache(build)
    assert entries["JETPACK_SYSROOT"] == str(sysroot)
    # headers and libraries only from the target (the sysroot, CUDA's targets/aarch64-linux), programs from the host
    assert entries["PROBE_NVINFER_INCLUDE"] == str(sysroot / "usr/include/aarch64-linux-gnu")
    assert entries["PROBE_NVINFER_LIBRARY"] == str(sysroot / "usr/lib/aarch64-linux-gnu/libnvinfer.so")
    assert entries["PROBE_CUDA_INCLUDE"] == str(cuda / "targets/aarch64-linux/include")
    assert entries["PROBE_HOST_CMAKE"] == CMAKE or Path(entries["PROBE_HOST_CMAKE"]).resolve() == Path(CMAKE).resolve()
    # libnvinfer's own dependencies resolve inside the sysroot at link time
    assert f"-Wl,-rpath-link,{sysroot}/usr/lib/aarch64-linux-gnu" in entries["CMAKE_EXE_LINKER_FLAGS"]


def test_the_sysroot_can_come_from_the_environment(tmp_path, probe):
    sysroot = make_sysroot(tmp_path / "sysroot")
    build = tmp_path / "build"
    result = configure(probe, build, env={"JETPACK_SYSROOT": str(sysroot)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert cache(build)["JETPACK_SYSROOT"] == str(sysroot)


def test_the_cross_prefix_names_the_compilers(tmp_path, probe):
    """Without a compiler override the toolchain asks for <prefix>gcc/g++: here a prefix no compiler has."""
    sysroot = make_sysroot(tmp_path / "sysroot")
    result = subprocess.run(
        [CMAKE, "-S", str(probe), "-B", str(tmp_path / "build"), f"-DCMAKE_TOOLCHAIN_FILE={TOOLCHAIN}",
         f"-DJETPACK_SYSROOT={sysroot}", "-DJETPACK_CROSS_PREFIX=no-such-arch-linux-gnu-"],
        capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "no-such-arch-linux-gnu-g" in result.stdout + result.stderr


def test_a_missing_sysroot_stops_configure_with_the_fix(tmp_path, probe):
    result = configure(probe, tmp_path / "build")
    assert result.returncode != 0
    assert "aarch64-jetpack: no sysroot given: pass -DJETPACK_SYSROOT=" in " ".join(result.stderr.split())


def test_a_folder_that_is_no_root_filesystem_is_refused(tmp_path, probe):
    result = configure(probe, tmp_path / "build", f"-DJETPACK_SYSROOT={tmp_path / 'nowhere'}")
    assert result.returncode != 0
    assert "is not an aarch64 root filesystem" in " ".join(result.stderr.split())


def test_a_sysroot_without_tensorrt_is_refused_unless_core_only(tmp_path, probe):
    sysroot = make_sysroot(tmp_path / "sysroot", tensorrt=False)
    refused = configure(probe, tmp_path / "refused", f"-DJETPACK_SYSROOT={sysroot}")
    assert refused.returncode != 0
    message = " ".join(refused.stderr.split())
    assert "has no TensorRT headers (usr/include/aarch64-linux-gnu/NvInfer.h)" in message
    assert "-DJETPACK_CORE_ONLY=ON" in message
    core_only = configure(probe, tmp_path / "core", f"-DJETPACK_SYSROOT={sysroot}", "-DJETPACK_CORE_ONLY=ON")
    assert core_only.returncode == 0, core_only.stdout + core_only.stderr
    assert "builds the TensorRT-free core only" in core_only.stdout


DEPLOY_CMAKE = DEPLOY / "CMakeLists.txt"
NEEDS_DEPLOY = pytest.mark.skipif(not DEPLOY_CMAKE.exists(), reason="deploy/CMakeLists.txt is not there yet")
HAS_RUNNER_TARGET = DEPLOY_CMAKE.exists() and "add_executable(edgecompress-runner" in DEPLOY_CMAKE.read_text()


@NEEDS_DEPLOY
def test_deploy_configures_with_the_toolchain(tmp_path):
    """deploy/ finds TensorRT in the sysroot, not on the host; without CUDA it configures the core only."""
    sysroot = make_sysroot(tmp_path / "sysroot")
    build = tmp_path / "build"
    result = configure(DEPLOY, build, f"-DJETPACK_SYSROOT={sysroot}", f"-DJETPACK_CUDA_ROOT={tmp_path / 'no-cuda'}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert configured_processor(build) == "aarch64"
    entries = cache(build)
    assert entries["JETPACK_SYSROOT"] == str(sysroot)
    assert entries["TENSORRT_INCLUDE_DIR"] == str(sysroot / "usr/include/aarch64-linux-gnu")
    assert entries["TENSORRT_NVINFER_LIBRARY"] == str(sysroot / "usr/lib/aarch64-linux-gnu/libnvinfer.so")


@pytest.mark.skipif(not HAS_RUNNER_TARGET, reason="deploy/CMakeLists.txt has no edgecompress-runner target yet")
def test_deploy_configures_the_runner_with_cross_cuda(tmp_path):
    """With CUDA's aarch64 target files on the host (cuda-cross-aarch64), as in docker/jetson-cross, the runner is
    configured and links the aarch64 libcudart. The host nvcc is a script that answers `--version` the way nvcc
    does, the one thing FindCUDAToolkit asks of it at configure time."""
    sysroot = make_sysroot(tmp_path / "sysroot")
    cuda = make_cuda_cross(tmp_path / "cuda-12.6")
    target = cuda / "targets" / "aarch64-linux"
    (cuda / "bin").mkdir()
    nvcc = cuda / "bin" / "nvcc"
    nvcc.write_text("#!/bin/sh\necho 'Cuda compilation tools, release 12.6, V12.6.68'\n")
    nvcc.chmod(0o755)
    build = tmp_path / "build"
    result = configure(DEPLOY, build, f"-DJETPACK_SYSROOT={sysroot}", f"-DJETPACK_CUDA_ROOT={cuda}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "building edgecompress-runner" in result.stdout
    entries = cache(build)
    assert entries["CUDA_CUDART"] == str(target / "lib/libcudart.so")
    assert entries["TENSORRT_NVINFER_LIBRARY"] == str(sysroot / "usr/lib/aarch64-linux-gnu/libnvinfer.so")

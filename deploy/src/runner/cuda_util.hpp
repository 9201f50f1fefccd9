// CUDA runtime helpers for edgecompress-runner: checked calls and owners for device memory, pinned host
// memory, streams, events and graphs. CUDA runtime API: https://docs.nvidia.com/cuda/cuda-runtime-api/
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <string>

namespace ec {
namespace cuda {

/// Throws std::runtime_error "`call` failed: <CUDA's description>" unless `status` is cudaSuccess.
void check(cudaError_t status, const char* call);

/// Makes `device` current and creates its CUDA context (so later cudaMemGetInfo readings exclude it).
/// UserError when there is no such device.
void select_device(int device);

/// The device's name (cudaGetDeviceProperties), e.g. "Orin".
std::string device_name(int device);

/// Free device memory in bytes (cudaMemGetInfo). On a Jetson, GPU and CPU share DRAM, so this is the
/// system's free memory and other processes move it.
std::size_t free_memory_bytes();

class DeviceMemory {
 public:
  explicit DeviceMemory(std::size_t bytes);
  ~DeviceMemory();
  DeviceMemory(DeviceMemory&& other) noexcept;
  DeviceMemory(const DeviceMemory&) = delete;
  DeviceMemory& operator=(const DeviceMemory&) = delete;
  DeviceMemory& operator=(DeviceMemory&&) = delete;
  void* get() const { return pointer_; }

 private:
  void* pointer_ = nullptr;
};

/// Page-locked host memory, so copies to and from the GPU are asynchronous DMA.
class PinnedMemory {
 public:
  explicit PinnedMemory(std::size_t bytes);
  ~PinnedMemory();
  PinnedMemory(PinnedMemory&& other) noexcept;
  PinnedMemory(const PinnedMemory&) = delete;
  PinnedMemory& operator=(const PinnedMemory&) = delete;
  PinnedMemory& operator=(PinnedMemory&&) = delete;
  void* get() const { return pointer_; }

 private:
  void* pointer_ = nullptr;
};

class Stream {
 public:
  Stream();
  ~Stream();
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  cudaStream_t get() const { return stream_; }

 private:
  cudaStream_t stream_ = nullptr;
};

class Event {
 public:
  Event();
  ~Event();
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  cudaEvent_t get() const { return event_; }

 private:
  cudaEvent_t event_ = nullptr;
};

/// Milliseconds between two recorded, completed events (cudaEventElapsedTime).
double elapsed_ms(const Event& start, const Event& stop);

/// A captured and instantiated CUDA graph.
class Graph {
 public:
  Graph() = default;
  ~Graph();
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;
  /// Takes ownership of `graph` and instantiates it.
  void instantiate(cudaGraph_t graph);
  void launch(cudaStream_t stream) const;
  bool ready() const { return exec_ != nullptr; }

 private:
  cudaGraph_t graph_ = nullptr;
  cudaGraphExec_t exec_ = nullptr;
};

}  // namespace cuda
}  // namespace ec

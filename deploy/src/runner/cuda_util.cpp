#include "cuda_util.hpp"

#include <stdexcept>
#include <utility>

#include "edgecompress/errors.hpp"

namespace ec {
namespace cuda {

void check(cudaError_t status, const char* call) {
  if (status != cudaSuccess) {
    throw std::runtime_error(std::string(call) + " failed: " + cudaGetErrorName(status) + " (" + cudaGetErrorString(status) + ")");
  }
}

void select_device(int device) {
  int count = 0;
  check(cudaGetDeviceCount(&count), "cudaGetDeviceCount (is the NVIDIA driver loaded? try nvidia-smi or tegrastats)");
  if (device >= count) {
    throw UserError("--device " + std::to_string(device) + ": this machine has " + std::to_string(count) + " CUDA device(s); give 0.." +
                    std::to_string(count - 1));
  }
  check(cudaSetDevice(device), "cudaSetDevice");
  check(cudaFree(nullptr), "cudaFree(0) (creating the CUDA context)");
}

std::string device_name(int device) {
  cudaDeviceProp properties{};
  check(cudaGetDeviceProperties(&properties, device), "cudaGetDeviceProperties");
  return properties.name;
}

std::size_t free_memory_bytes() {
  std::size_t free = 0, total = 0;
  check(cudaMemGetInfo(&free, &total), "cudaMemGetInfo");
  return free;
}

DeviceMemory::DeviceMemory(std::size_t bytes) { check(cudaMalloc(&pointer_, bytes == 0 ? 1 : bytes), "cudaMalloc"); }
DeviceMemory::~DeviceMemory() { cudaFree(pointer_); }
DeviceMemory::DeviceMemory(DeviceMemory&& other) noexcept : pointer_(std::exchange(other.pointer_, nullptr)) {}

PinnedMemory::PinnedMemory(std::size_t bytes) { check(cudaMallocHost(&pointer_, bytes == 0 ? 1 : bytes), "cudaMallocHost"); }
PinnedMemory::~PinnedMemory() { cudaFreeHost(pointer_); }
PinnedMemory::PinnedMemory(PinnedMemory&& other) noexcept : pointer_(std::exchange(other.pointer_, nullptr)) {}

Stream::Stream() { check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreateWithFlags"); }
Stream::~Stream() { cudaStreamDestroy(stream_); }

Event::Event() { check(cudaEventCreate(&event_), "cudaEventCreate"); }
Event::~Event() { cudaEventDestroy(event_); }

double elapsed_ms(const Event& start, const Event& stop) {
  float milliseconds = 0.0f;
  check(cudaEventElapsedTime(&milliseconds, start.get(), stop.get()), "cudaEventElapsedTime");
  return milliseconds;
}

Graph::~Graph() {
  if (exec_ != nullptr) cudaGraphExecDestroy(exec_);
  if (graph_ != nullptr) cudaGraphDestroy(graph_);
}

void Graph::instantiate(cudaGraph_t graph) {
  graph_ = graph;
#if CUDART_VERSION >= 12000
  check(cudaGraphInstantiate(&exec_, graph_, 0), "cudaGraphInstantiate");
#else  // CUDA 10.2 (JetPack 4.6) and 11.x: the five-argument form
  check(cudaGraphInstantiate(&exec_, graph_, nullptr, nullptr, 0), "cudaGraphInstantiate");
#endif
}

void Graph::launch(cudaStream_t stream) const { check(cudaGraphLaunch(exec_, stream), "cudaGraphLaunch"); }

}  // namespace cuda
}  // namespace ec

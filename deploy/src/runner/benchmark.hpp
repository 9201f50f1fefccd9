// The timed loop: warm-up, then inferences until both the iteration count and the duration are reached.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "cuda_util.hpp"
#include "edgecompress/shapes.hpp"
#include "trt_engine.hpp"

namespace ec {

/// One input or output tensor: its pinned host copy and its device memory.
struct IoBuffer {
  const trt::TensorInfo* tensor;
  Shape shape;
  std::size_t bytes;
  cuda::DeviceMemory device;
  cuda::PinnedMemory host;
};

struct BenchmarkSettings {
  std::int64_t warmup = 10;
  std::int64_t iterations = 100;
  double duration_s = 0.0;
  bool cuda_graph = false;
};

struct BenchmarkTimes {
  std::vector<double> host_ms;  // H2D copies + inference + D2H copies + stream synchronize, per iteration (steady_clock)
  std::vector<double> gpu_ms;   // the enqueued inference alone, per iteration (CUDA events)
  double wall_s = 0.0;          // the whole timed loop
};

/// Runs the loop on `engine` with `inputs` and `outputs` bound; with settings.cuda_graph the inference
/// is captured once into a CUDA graph and the graph is launched instead of enqueueing.
BenchmarkTimes run_benchmark(trt::Engine& engine, std::vector<IoBuffer>& inputs, std::vector<IoBuffer>& outputs,
                             const BenchmarkSettings& settings);

}  // namespace ec

#include "benchmark.hpp"

#include <chrono>

#include "edgecompress/errors.hpp"

namespace ec {

namespace {

using Clock = std::chrono::steady_clock;

/// Captures one enqueue into a CUDA graph. TensorRT asks for one enqueue outside the capture first, so
/// its deferred set-up (shape-dependent state) is not captured: "Working with CUDA Graphs" in
/// https://docs.nvidia.com/deeplearning/tensorrt/latest/inference-library/advanced.html
void capture_graph(trt::Engine& engine, cuda::Stream& stream, cuda::Graph& graph) {
  engine.enqueue(stream.get());
  cuda::check(cudaStreamSynchronize(stream.get()), "cudaStreamSynchronize");
  cuda::check(cudaStreamBeginCapture(stream.get(), cudaStreamCaptureModeGlobal), "cudaStreamBeginCapture");
  std::string failure;
  try {
    engine.enqueue(stream.get());
  } catch (const std::exception& error) {
    failure = error.what();
  }
  cudaGraph_t captured = nullptr;
  const cudaError_t ended = cudaStreamEndCapture(stream.get(), &captured);  // always ends the capture
  if (failure.empty() && ended != cudaSuccess) failure = cudaGetErrorString(ended);
  if (!failure.empty()) {
    if (captured != nullptr) cudaGraphDestroy(captured);
    cudaGetLastError();  // clear the capture's error so it does not surface later
    throw UserError("the engine could not be captured into a CUDA graph (" + failure + "); run without --cuda-graph");
  }
  graph.instantiate(captured);
}

}  // namespace

BenchmarkTimes run_benchmark(trt::Engine& engine, std::vector<IoBuffer>& inputs, std::vector<IoBuffer>& outputs,
                             const BenchmarkSettings& settings) {
  cuda::Stream stream;
  cuda::Event start, stop;
  cuda::Graph graph;
  if (settings.cuda_graph) capture_graph(engine, stream, graph);

  // One inference as the caller sees it; returns its host and GPU milliseconds.
  const auto infer = [&]() {
    const Clock::time_point begin = Clock::now();
    for (IoBuffer& input : inputs) {
      cuda::check(cudaMemcpyAsync(input.device.get(), input.host.get(), input.bytes, cudaMemcpyHostToDevice, stream.get()), "cudaMemcpyAsync (input)");
    }
    cuda::check(cudaEventRecord(start.get(), stream.get()), "cudaEventRecord");
    if (graph.ready()) {
      graph.launch(stream.get());
    } else {
      engine.enqueue(stream.get());
    }
    cuda::check(cudaEventRecord(stop.get(), stream.get()), "cudaEventRecord");
    for (IoBuffer& output : outputs) {
      cuda::check(cudaMemcpyAsync(output.host.get(), output.device.get(), output.bytes, cudaMemcpyDeviceToHost, stream.get()), "cudaMemcpyAsync (output)");
    }
    cuda::check(cudaStreamSynchronize(stream.get()), "cudaStreamSynchronize");
    const double host_ms = std::chrono::duration<double, std::milli>(Clock::now() - begin).count();
    return std::make_pair(host_ms, cuda::elapsed_ms(start, stop));
  };

  for (std::int64_t i = 0; i < settings.warmup; ++i) infer();

  BenchmarkTimes times;
  times.host_ms.reserve(static_cast<std::size_t>(settings.iterations));
  times.gpu_ms.reserve(static_cast<std::size_t>(settings.iterations));
  const Clock::time_point begin = Clock::now();
  const auto elapsed_s = [&] { return std::chrono::duration<double>(Clock::now() - begin).count(); };
  while (static_cast<std::int64_t>(times.host_ms.size()) < settings.iterations || elapsed_s() < settings.duration_s) {
    const auto measured = infer();
    times.host_ms.push_back(measured.first);
    times.gpu_ms.push_back(measured.second);
  }
  times.wall_s = elapsed_s();
  return times;
}

}  // namespace ec

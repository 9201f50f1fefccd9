// edgecompress-runner: times a serialized TensorRT engine on this device and writes an
// edgecompress.latency/1 report (edgecompress/profile/latency_report.schema.json).
#include <algorithm>
#include <iostream>
#include <string>
#include <vector>

#include "benchmark.hpp"
#include "cuda_util.hpp"
#include "edgecompress/errors.hpp"
#include "edgecompress/files.hpp"
#include "edgecompress/latency_report.hpp"
#include "edgecompress/runner_options.hpp"
#include "edgecompress/stats.hpp"
#include "edgecompress/system_info.hpp"
#include "edgecompress/tensor_files.hpp"
#include "trt_engine.hpp"

namespace ec {
namespace {

constexpr double kMiB = 1024.0 * 1024.0;

/// Every file the run needs is checked before any GPU work.
void check_paths(const RunnerOptions& options) {
  check_engine_file(options.engine);
  for (const auto& input : options.input_files) {
    check_readable_file(input.second, "input file for '" + input.first + "'", "check the path given to --input " + input.first + "=FILE");
  }
  if (!options.json_path.empty()) check_output_path(options.json_path, "--json");
}

/// The shape each input runs with, set on the engine; then every tensor's buffers, inputs filled.
void prepare_buffers(trt::Engine& engine, const RunnerOptions& options, std::vector<IoBuffer>& inputs, std::vector<IoBuffer>& outputs) {
  const std::vector<std::string> input_names = engine.input_names();
  std::vector<std::string> named_files, named_shapes;
  for (const auto& input : options.input_files) named_files.push_back(input.first);
  for (const auto& shape : options.shapes) named_shapes.push_back(shape.first);
  check_input_names("--input", named_files, input_names);
  check_input_names("--shapes", named_shapes, input_names);

  for (const trt::TensorInfo& tensor : engine.tensors()) {
    if (!tensor.is_input) continue;
    if (!trt::feedable_type(tensor.type)) {
      throw UserError("input '" + tensor.name + "' is " + trt::type_name(tensor.type) +
                      "; the runner feeds float32 and float16 inputs only (rebuild the engine with float I/O)");
    }
    const Shape shape = resolve_input_shape(tensor.name, tensor.engine_shape, options.shapes);
    const bool dynamic = std::any_of(tensor.engine_shape.begin(), tensor.engine_shape.end(), [](std::int64_t dim) { return dim < 0; });
    if (dynamic) engine.set_input_shape(tensor, shape);
  }
  std::uint64_t seed = options.seed;
  for (const trt::TensorInfo& tensor : engine.tensors()) {
    const Shape shape = engine.runtime_shape(tensor);
    if (std::any_of(shape.begin(), shape.end(), [](std::int64_t dim) { return dim < 0; })) {
      throw UserError("output '" + tensor.name + "' has a data-dependent shape " + format_shape(shape) +
                      " that the runner cannot size before running; time the model without that part (e.g. its NMS)");
    }
    const std::size_t bytes = static_cast<std::size_t>(element_count(shape)) * trt::type_size(tensor.type);
    IoBuffer buffer{&tensor, shape, bytes, cuda::DeviceMemory(bytes), cuda::PinnedMemory(bytes)};
    engine.set_address(tensor, buffer.device.get());
    if (tensor.is_input) {
      const auto file = options.input_files.find(tensor.name);
      const std::vector<float> values = file != options.input_files.end()
                                            ? load_input_file(tensor.name, file->second, shape, options.image_fit)
                                            : random_input(element_count(shape), seed++);
      const std::vector<unsigned char> encoded = encode_tensor(values, *trt::feedable_type(tensor.type));
      std::copy(encoded.begin(), encoded.end(), static_cast<unsigned char*>(buffer.host.get()));
      inputs.push_back(std::move(buffer));
    } else {
      outputs.push_back(std::move(buffer));
    }
  }
}

int run(const std::vector<std::string>& args) {
  const RunnerOptions options = parse_runner_arguments(args);
  if (options.help) {
    std::cout << runner_help();
    return 0;
  }
  check_paths(options);
  const int device = static_cast<int>(options.device);
  cuda::select_device(device);
  const std::optional<double> host_before_mb = process_memory_mb("VmRSS");
  const std::size_t free_before = cuda::free_memory_bytes();

  trt::Logger logger;
  trt::Engine engine(options.engine, read_file(options.engine), logger);
  std::vector<IoBuffer> inputs, outputs;
  prepare_buffers(engine, options, inputs, outputs);
  const std::size_t free_after = cuda::free_memory_bytes();

  const BenchmarkTimes times = run_benchmark(engine, inputs, outputs, {options.warmup, options.iterations, options.duration_s, options.cuda_graph});

  LatencyReport report;
  report.created = utc_now_iso8601();
  report.source = "edgecompress-runner";
  report.model = {options.engine, file_size(options.engine), "engine", options.stage};
  report.runtime = {"tensorrt", trt::version(), "cuda:" + std::to_string(device), options.precision};
  report.machine = {cpu_description(), cuda::device_name(device), options.target, options.power_mode};
  for (const IoBuffer& input : inputs) report.inputs.push_back({input.tensor->name, input.shape, trt::type_name(input.tensor->type)});
  const std::int64_t batch = inputs.empty() || inputs.front().shape.empty() ? 1 : inputs.front().shape.front();
  report.settings.warmup = options.warmup;
  report.settings.iterations = static_cast<std::int64_t>(times.host_ms.size());
  if (options.duration_s > 0.0) report.settings.duration_s = options.duration_s;
  report.settings.cuda_graph = options.cuda_graph;
  report.settings.batch = batch;
  report.host_times_ms = times.host_ms;
  report.gpu_times_ms = times.gpu_ms;
  report.throughput_ips = throughput(times.host_ms.size(), batch, times.wall_s);
  report.gpu_mb = free_before > free_after ? static_cast<double>(free_before - free_after) / kMiB : 0.0;
  const std::optional<double> host_peak_mb = process_memory_mb("VmHWM");
  if (host_before_mb && host_peak_mb) report.peak_host_mb = std::max(0.0, *host_peak_mb - *host_before_mb);

  std::cout << format_summary(report);
  if (!options.json_path.empty()) {
    write_report(report, options.json_path);
    std::cout << "  report: " << options.json_path << "\n";
  }
  return 0;
}

}  // namespace
}  // namespace ec

int main(int argc, char** argv) {
  return ec::run_main("edgecompress-runner", [&] { return ec::run(std::vector<std::string>(argv + 1, argv + argc)); });
}

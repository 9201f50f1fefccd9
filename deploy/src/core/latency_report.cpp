#include "edgecompress/latency_report.hpp"

#include <algorithm>
#include <cmath>
#include <ctime>
#include <iomanip>
#include <sstream>
#include <stdexcept>

#include "edgecompress/files.hpp"

namespace ec {

namespace {

void require(bool condition, const std::string& what) {
  if (!condition) throw std::invalid_argument("invalid latency report: " + what);
}

void require_finite_times(const std::vector<double>& times, const std::string& what) {
  for (const double time : times) require(std::isfinite(time) && time >= 0.0, what + " holds a negative or non-finite time");
}

Json stats_json(const Summary& summary) {
  return Json::Object{{"median", summary.median}, {"p90", summary.p90}, {"p99", summary.p99}, {"mean", summary.mean},
                      {"min", summary.min},       {"max", summary.max}, {"count", summary.count}};
}

Json optional_mb(const std::optional<double>& value) {
  if (value) require(std::isfinite(*value), "a memory figure is not finite");
  return Json::optional(value);
}

std::string fixed(double value, int decimals) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(decimals) << value;
  return out.str();
}

std::string stats_line(const std::string& title, const Summary& summary) {
  return "  " + title + " ms: median " + fixed(summary.median, 3) + "  p90 " + fixed(summary.p90, 3) + "  p99 " + fixed(summary.p99, 3) +
         "  mean " + fixed(summary.mean, 3) + "  min " + fixed(summary.min, 3) + "  max " + fixed(summary.max, 3) + "  (" +
         std::to_string(summary.count) + " runs)\n";
}

}  // namespace

const std::vector<std::string>& model_formats() {
  static const std::vector<std::string> formats{"onnx", "engine", "openvino-ir", "torch"};
  return formats;
}

Json report_to_json(const LatencyReport& report) {
  const auto& formats = model_formats();
  require(std::find(formats.begin(), formats.end(), report.model.format) != formats.end(), "unknown model format '" + report.model.format + "'");
  require(!report.host_times_ms.empty(), "no host latencies");
  require(!report.runtime.name.empty(), "no runtime name");
  require_finite_times(report.host_times_ms, "latency_ms.host");
  require_finite_times(report.gpu_times_ms, "latency_ms.gpu_compute");
  require(std::isfinite(report.throughput_ips) && report.throughput_ips >= 0.0, "throughput must be finite and >= 0");
  if (report.settings.iterations) require(*report.settings.iterations >= 1, "settings.iterations must be >= 1");
  if (report.settings.warmup) require(*report.settings.warmup >= 0, "settings.warmup must be >= 0");
  if (report.settings.batch) require(*report.settings.batch >= 1, "settings.batch must be >= 1");

  Json::Array inputs;
  for (const InputInfo& input : report.inputs) {
    Json::Array shape;
    for (const std::int64_t dim : input.shape) {
      require(dim >= 1, "input '" + input.name + "' has a dimension below 1");
      shape.emplace_back(dim);
    }
    inputs.emplace_back(Json::Object{{"name", input.name}, {"shape", std::move(shape)}, {"dtype", Json::optional(input.dtype)}});
  }
  Json::Array times(report.host_times_ms.begin(), report.host_times_ms.end());
  const RunSettings& settings = report.settings;
  return Json::Object{
      {"schema", kLatencySchema},
      {"created", report.created},
      {"source", report.source},
      {"model", Json::Object{{"path", report.model.path}, {"bytes", Json::optional(report.model.bytes)}, {"format", report.model.format},
                             {"stage", Json::optional(report.model.stage)}}},
      {"runtime", Json::Object{{"name", report.runtime.name}, {"version", Json::optional(report.runtime.version)},
                               {"device", Json::optional(report.runtime.device)}, {"precision", Json::optional(report.runtime.precision)}}},
      {"machine", Json::Object{{"cpu", Json::optional(report.machine.cpu)}, {"gpu", Json::optional(report.machine.gpu)},
                               {"target", Json::optional(report.machine.target)}, {"power_mode", Json::optional(report.machine.power_mode)},
                               {"clocks", nullptr}}},
      {"inputs", std::move(inputs)},
      {"settings", Json::Object{{"warmup", Json::optional(settings.warmup)}, {"iterations", Json::optional(settings.iterations)},
                                {"duration_s", Json::optional(settings.duration_s)}, {"threads", Json::optional(settings.threads)},
                                {"cuda_graph", Json::optional(settings.cuda_graph)}, {"batch", Json::optional(settings.batch)}}},
      {"latency_ms", Json::Object{{"host", stats_json(summarize(report.host_times_ms))},
                                  {"gpu_compute", report.gpu_times_ms.empty() ? Json() : stats_json(summarize(report.gpu_times_ms))}}},
      {"throughput_ips", report.throughput_ips},
      {"memory_mb", Json::Object{{"peak_host", optional_mb(report.peak_host_mb)}, {"gpu", optional_mb(report.gpu_mb)}}},
      {"times_ms", std::move(times)},
  };
}

void write_report(const LatencyReport& report, const std::string& path) {
  write_file_atomically(path, report_to_json(report).dump(2) + "\n");
}

std::string format_summary(const LatencyReport& report) {
  const std::optional<std::string>& where = report.machine.gpu ? report.machine.gpu : report.runtime.device ? report.runtime.device : report.machine.cpu;
  std::string text = report.model.path + " with " + report.runtime.name + (report.runtime.version ? " " + *report.runtime.version : "") +
                     (where ? " on " + *where : "") + "\n";
  for (const InputInfo& input : report.inputs) {
    text += "  input " + input.name + " " + format_shape(input.shape) + (input.dtype ? " " + *input.dtype : "") + "\n";
  }
  text += stats_line("host latency", summarize(report.host_times_ms));
  if (!report.gpu_times_ms.empty()) text += stats_line("GPU compute ", summarize(report.gpu_times_ms));
  text += "  throughput: " + fixed(report.throughput_ips, 1) + " inferences/s";
  if (report.gpu_mb) text += "; GPU memory: " + fixed(*report.gpu_mb, 1) + " MiB";
  if (report.peak_host_mb) text += "; host memory: +" + fixed(*report.peak_host_mb, 1) + " MiB";
  return text + "\n";
}

std::string utc_now_iso8601() {
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  char buffer[32];
  std::strftime(buffer, sizeof buffer, "%Y-%m-%dT%H:%M:%SZ", &utc);
  return buffer;
}

}  // namespace ec

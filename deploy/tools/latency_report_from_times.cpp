// ec-latency-report: writes an edgecompress.latency/1 report from per-iteration timings in text files.
// The tests use it to check the C++ statistics and JSON against numpy and the schema; it also turns
// timings measured by another tool into a report that `edgecompress report` compares with the rest.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>

#include "edgecompress/errors.hpp"
#include "edgecompress/files.hpp"
#include "edgecompress/latency_report.hpp"
#include "edgecompress/options.hpp"
#include "edgecompress/system_info.hpp"

namespace {

/// Whitespace-separated millisecond figures, each finite and >= 0.
std::vector<double> read_times(const std::string& option, const std::string& path) {
  ec::check_readable_file(path, option + " file", "give a text file of per-iteration times in ms, one or more per line");
  std::ifstream stream(path);
  std::vector<double> times;
  std::string word;
  while (stream >> word) {
    char* end = nullptr;
    const double time = std::strtod(word.c_str(), &end);
    if (end != word.c_str() + word.size() || !std::isfinite(time) || time < 0.0) {
      throw ec::UserError(option + " " + path + ": '" + word + "' is not a time; write non-negative ms figures only, e.g. 4.21");
    }
    times.push_back(time);
  }
  if (times.empty()) throw ec::UserError(option + " " + path + " holds no times; write one ms figure per iteration");
  return times;
}

int run(const std::vector<std::string>& args) {
  std::string times_path, gpu_times_path, model_path, json_path;
  ec::LatencyReport report;
  report.source = "ec-latency-report";
  report.model.format = "engine";
  report.runtime.name = "tensorrt";
  ec::OptionParser parser("ec-latency-report", "--times FILE --model PATH --json OUT [options]",
                          "Writes an edgecompress.latency/1 report from per-iteration host times (ms) in a text file.");
  parser.option("--times", "FILE", "host latencies in ms, whitespace-separated (required)", [&](const std::string& v) { times_path = v; })
      .option("--gpu-times", "FILE", "GPU compute times in ms, whitespace-separated", [&](const std::string& v) { gpu_times_path = v; })
      .option("--model", "PATH", "the timed model file (required)", [&](const std::string& v) { model_path = v; })
      .option("--format", "NAME", "model format: onnx, engine (default), openvino-ir, torch", [&](const std::string& v) {
        const auto& formats = ec::model_formats();
        if (std::find(formats.begin(), formats.end(), v) == formats.end()) {
          throw ec::UserError("--format: expected one of onnx, engine, openvino-ir, torch, got '" + v + "'");
        }
        report.model.format = v;
      })
      .option("--runtime", "NAME", "runtime name (default tensorrt)", [&](const std::string& v) { report.runtime.name = v; })
      .option("--input", "NAME:DIMS", "an input and its shape, e.g. images:1x3x320x320; repeatable", [&](const std::string& v) {
        const std::size_t colon = v.rfind(':');
        if (colon == std::string::npos || colon == 0) throw ec::UserError("--input: expected NAME:DIMS, got '" + v + "'");
        report.inputs.push_back({v.substr(0, colon), ec::parse_shape("--input", v.substr(colon + 1)), std::string("float32")});
      })
      .option("--warmup", "N", "warm-up iterations that preceded the timings", [&](const std::string& v) {
        report.settings.warmup = ec::parse_integer("--warmup", v, 0);
      })
      .option("--json", "OUT", "report file to write (required)", [&](const std::string& v) { json_path = v; });
  if (!parser.parse(args)) {
    std::cout << parser.help_text();
    return 0;
  }
  for (const auto& required : {std::make_pair("--times FILE", &times_path), std::make_pair("--model PATH", &model_path),
                               std::make_pair("--json OUT", &json_path)}) {
    if (required.second->empty()) throw ec::UserError(std::string(required.first) + " is required (see --help)");
  }
  ec::check_readable_file(model_path, "model file", "pass the timed model with --model PATH");
  ec::check_output_path(json_path, "--json");
  report.host_times_ms = read_times("--times", times_path);
  if (!gpu_times_path.empty()) report.gpu_times_ms = read_times("--gpu-times", gpu_times_path);
  report.created = ec::utc_now_iso8601();
  report.model.path = model_path;
  report.model.bytes = ec::file_size(model_path);
  report.machine.cpu = ec::cpu_description();
  const std::int64_t batch = report.inputs.empty() ? 1 : report.inputs.front().shape.front();
  report.settings.iterations = static_cast<std::int64_t>(report.host_times_ms.size());
  report.settings.batch = batch;
  double total_ms = 0.0;
  for (const double time : report.host_times_ms) total_ms += time;
  report.throughput_ips = total_ms > 0.0 ? ec::throughput(report.host_times_ms.size(), batch, total_ms / 1e3) : 0.0;
  ec::write_report(report, json_path);
  std::cout << ec::format_summary(report) << "  report: " << json_path << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return ec::run_main("ec-latency-report", [&] { return run(std::vector<std::string>(argv + 1, argv + argc)); });
}

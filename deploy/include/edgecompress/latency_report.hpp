// The latency report of one timed model, in the schema every edgecompress part writes:
// edgecompress/profile/latency_report.schema.json ("schema": "edgecompress.latency/1").
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "edgecompress/json.hpp"
#include "edgecompress/shapes.hpp"
#include "edgecompress/stats.hpp"

namespace ec {

constexpr const char* kLatencySchema = "edgecompress.latency/1";

struct ModelInfo {
  std::string path;
  std::optional<std::uint64_t> bytes;
  std::string format;  // one of kModelFormats
  std::optional<std::string> stage;
};

struct RuntimeInfo {
  std::string name;
  std::optional<std::string> version;
  std::optional<std::string> device;
  std::optional<std::string> precision;
};

struct MachineInfo {
  std::optional<std::string> cpu;
  std::optional<std::string> gpu;
  std::optional<std::string> target;
  std::optional<std::string> power_mode;
};

struct InputInfo {
  std::string name;
  Shape shape;
  std::optional<std::string> dtype;
};

struct RunSettings {
  std::optional<std::int64_t> warmup;
  std::optional<std::int64_t> iterations;
  std::optional<double> duration_s;
  std::optional<std::int64_t> threads;
  std::optional<bool> cuda_graph;
  std::optional<std::int64_t> batch;
};

struct LatencyReport {
  std::string created;  // ISO 8601 UTC, see utc_now_iso8601()
  std::string source;
  ModelInfo model;
  RuntimeInfo runtime;
  MachineInfo machine;
  std::vector<InputInfo> inputs;
  RunSettings settings;
  std::vector<double> host_times_ms;  // one per timed iteration; the report's latency_ms.host and times_ms
  std::vector<double> gpu_times_ms;   // CUDA-event times of the enqueued work; empty: latency_ms.gpu_compute is null
  double throughput_ips = 0.0;
  std::optional<double> peak_host_mb;
  std::optional<double> gpu_mb;
};

/// The model formats the schema knows.
const std::vector<std::string>& model_formats();

/// The report as the schema's JSON object. std::invalid_argument when it cannot be valid (no host times,
/// a non-positive dimension, an unknown model format, a negative or non-finite figure).
Json report_to_json(const LatencyReport& report);

/// Writes the report's JSON to `path` atomically (temporary file in the same folder, then rename).
void write_report(const LatencyReport& report, const std::string& path);

/// A few human-readable lines: model, device, input shapes, latency statistics, throughput and memory.
std::string format_summary(const LatencyReport& report);

/// Current UTC time as "2026-01-31T12:00:00Z".
std::string utc_now_iso8601();

}  // namespace ec

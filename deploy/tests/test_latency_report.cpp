// The report's JSON: read back with a strict reader, checked key by key against the schema's required parts.
#include <fstream>
#include <sstream>

#include "check.hpp"
#include "edgecompress/errors.hpp"
#include "edgecompress/files.hpp"
#include "edgecompress/latency_report.hpp"
#include "json_reader.hpp"

namespace {

ec::LatencyReport sample_report() {
  ec::LatencyReport report;
  report.created = "2026-01-31T12:00:00Z";
  report.source = "edgecompress-runner";
  report.model = {"runs/demo/engine/model \"int8\".engine", 123456u, "engine", std::string("int8")};
  report.runtime = {"tensorrt", std::string("10.3.0"), std::string("cuda:0"), std::nullopt};
  report.machine = {std::string("ARMv8 Processor rev 1 (v8l)"), std::string("Orin"), std::string("jetson-orin-nano"), std::nullopt};
  report.inputs = {{"images", {1, 3, 320, 320}, std::string("float32")}};
  report.settings.warmup = 10;
  report.settings.iterations = 10;
  report.settings.cuda_graph = false;
  report.settings.batch = 1;
  report.host_times_ms = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  report.gpu_times_ms = {0.5, 0.25, 0.75};
  report.throughput_ips = 181.8;
  report.gpu_mb = 42.5;
  return report;
}

std::string read_text(const std::string& path) {
  std::ifstream stream(path);
  std::stringstream text;
  text << stream.rdbuf();
  return text.str();
}

}  // namespace

EC_TEST(report_reads_back_with_every_required_part) {
  const ec::Json json = ec_test::parse_json(ec::report_to_json(sample_report()).dump(2));
  for (const char* key : {"schema", "model", "runtime", "machine", "inputs", "settings", "latency_ms", "throughput_ips", "memory_mb"}) {
    EC_CHECK(json.contains(key));
  }
  EC_CHECK_EQ(json.at("schema").as_string(), "edgecompress.latency/1");
  EC_CHECK_EQ(json.at("source").as_string(), "edgecompress-runner");
  EC_CHECK_EQ(json.at("model").at("path").as_string(), "runs/demo/engine/model \"int8\".engine");
  EC_CHECK_EQ(json.at("model").at("bytes").as_integer(), 123456);
  EC_CHECK_EQ(json.at("model").at("format").as_string(), "engine");
  EC_CHECK_EQ(json.at("runtime").at("name").as_string(), "tensorrt");
  EC_CHECK(json.at("runtime").at("precision").is_null());
  EC_CHECK(json.at("machine").at("power_mode").is_null());
  const ec::Json& input = json.at("inputs").as_array().at(0);
  EC_CHECK_EQ(input.at("name").as_string(), "images");
  EC_CHECK_EQ(input.at("shape").as_array().size(), 4u);
  EC_CHECK_EQ(input.at("shape").as_array()[3].as_integer(), 320);
  EC_CHECK_EQ(json.at("settings").at("iterations").as_integer(), 10);
  EC_CHECK(json.at("settings").at("duration_s").is_null());
  EC_CHECK_EQ(json.at("settings").at("cuda_graph").as_bool(), false);
  const ec::Json& host = json.at("latency_ms").at("host");
  EC_CHECK_EQ(host.at("median").as_number(), 5.5);
  EC_CHECK_EQ(host.at("p90").as_number(), 9.1);
  EC_CHECK_EQ(host.at("p99").as_number(), 9.91);
  EC_CHECK_EQ(host.at("mean").as_number(), 5.5);
  EC_CHECK_EQ(host.at("min").as_number(), 1.0);
  EC_CHECK_EQ(host.at("max").as_number(), 10.0);
  EC_CHECK_EQ(host.at("count").as_integer(), 10);
  EC_CHECK_EQ(json.at("latency_ms").at("gpu_compute").at("median").as_number(), 0.5);
  EC_CHECK_EQ(json.at("throughput_ips").as_number(), 181.8);
  EC_CHECK_EQ(json.at("memory_mb").at("gpu").as_number(), 42.5);
  EC_CHECK(json.at("memory_mb").at("peak_host").is_null());
  EC_CHECK_EQ(json.at("times_ms").as_array().size(), 10u);
}

EC_TEST(cpu_reports_have_null_gpu_compute) {
  ec::LatencyReport report = sample_report();
  report.gpu_times_ms.clear();
  EC_CHECK(ec_test::parse_json(ec::report_to_json(report).dump(0)).at("latency_ms").at("gpu_compute").is_null());
}

EC_TEST(strings_are_escaped) {
  EC_CHECK_EQ(ec::json_quote("a\"b\\c\n\t\x01"), "\"a\\\"b\\\\c\\n\\t\\u0001\"");
  EC_CHECK_EQ(ec::json_quote("caf\xC3\xA9 \xE2\x82\xAC"), "\"caf\xC3\xA9 \xE2\x82\xAC\"");  // valid UTF-8 kept
  EC_CHECK_EQ(ec::json_quote("bad\xFFtail"), "\"bad\xEF\xBF\xBDtail\"");                // invalid byte -> U+FFFD
  EC_CHECK_EQ(ec::json_quote("\xC3"), "\"\xEF\xBF\xBD\"");                              // truncated sequence
  EC_CHECK_EQ(ec::json_quote("\xED\xA0\x80"), "\"\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\"");  // UTF-16 surrogate
  const std::string tricky = "path/with \"quotes\", \\backslashes\\ and\ttabs\r\n";
  EC_CHECK_EQ(ec_test::parse_json(ec::json_quote(tricky)).as_string(), tricky);
}

EC_TEST(numbers_round_trip_exactly) {
  for (const double value : {0.1, 1.0 / 3.0, 14.650000000000002, 1e-300, 123456789.125, -2.5, 0.0}) {
    EC_CHECK_EQ(ec_test::parse_json(ec::json_number(value)).as_number(), value);
  }
  EC_CHECK_EQ(ec::json_number(0.1), "0.1");
  EC_CHECK_THROWS(ec::json_number(1.0 / 0.0), std::invalid_argument, "non-finite");
}

EC_TEST(invalid_reports_are_refused) {
  ec::LatencyReport report = sample_report();
  report.host_times_ms.clear();
  EC_CHECK_THROWS(ec::report_to_json(report), std::invalid_argument, "no host latencies");
  report = sample_report();
  report.model.format = "tflite";
  EC_CHECK_THROWS(ec::report_to_json(report), std::invalid_argument, "unknown model format 'tflite'");
  report = sample_report();
  report.inputs[0].shape = {1, -1};
  EC_CHECK_THROWS(ec::report_to_json(report), std::invalid_argument, "dimension below 1");
  report = sample_report();
  report.host_times_ms.push_back(0.0 / 0.0);
  EC_CHECK_THROWS(ec::report_to_json(report), std::invalid_argument, "non-finite");
}

EC_TEST(write_report_is_atomic_and_complete) {
  ec_test::TempDir folder;
  const std::string path = folder.file("latency.json");
  ec_test::write_bytes(path, "old contents");
  ec::write_report(sample_report(), path);
  const ec::Json json = ec_test::parse_json(read_text(path));
  EC_CHECK_EQ(json.at("latency_ms").at("host").at("count").as_integer(), 10);
  EC_CHECK_THROWS(ec::write_report(sample_report(), folder.file("missing/latency.json")), ec::UserError, "cannot write");
}

EC_TEST(summary_names_the_figures) {
  const std::string text = ec::format_summary(sample_report());
  EC_CHECK_EQ(text.substr(0, text.find('\n')), "runs/demo/engine/model \"int8\".engine with tensorrt 10.3.0 on Orin");
  EC_CHECK(text.find("host latency ms: median 5.500  p90 9.100  p99 9.910") != std::string::npos);
  EC_CHECK(text.find("GPU compute  ms: median 0.500") != std::string::npos);
  EC_CHECK(text.find("input images 1x3x320x320 float32") != std::string::npos);
  EC_CHECK(text.find("throughput: 181.8 inferences/s; GPU memory: 42.5 MiB") != std::string::npos);
}

EC_TEST(created_is_iso8601_utc) {
  const std::string created = ec::utc_now_iso8601();
  EC_CHECK_EQ(created.size(), 20u);
  EC_CHECK_EQ(created[10], 'T');
  EC_CHECK_EQ(created.back(), 'Z');
}

#include "edgecompress/system_info.hpp"

#include <fstream>
#include <sstream>

namespace ec {

namespace {

std::string trim(const std::string& text) {
  const std::size_t first = text.find_first_not_of(" \t\r\n");
  if (first == std::string::npos) return "";
  return text.substr(first, text.find_last_not_of(" \t\r\n") - first + 1);
}

/// The value after "key:" of the first line starting with `key` in a "key : value" file such as /proc/cpuinfo.
std::optional<std::string> colon_field(const std::string& path, const std::string& key) {
  std::ifstream stream(path);
  std::string line;
  while (std::getline(stream, line)) {
    const std::size_t colon = line.find(':');
    if (colon != std::string::npos && trim(line.substr(0, colon)) == key) {
      const std::string value = trim(line.substr(colon + 1));
      if (!value.empty()) return value;
    }
  }
  return std::nullopt;
}

}  // namespace

std::optional<std::string> cpu_description() {
  if (auto model = colon_field("/proc/cpuinfo", "model name")) return model;
  std::ifstream board("/proc/device-tree/model");  // Jetson: "NVIDIA Jetson Orin Nano Developer Kit"
  std::string text;
  if (std::getline(board, text, '\0') && !trim(text).empty()) return trim(text);
  return colon_field("/proc/cpuinfo", "Hardware");
}

std::optional<double> process_memory_mb(const std::string& field) {
  const std::optional<std::string> value = colon_field("/proc/self/status", field);  // "123456 kB"
  if (!value) return std::nullopt;
  std::istringstream stream(*value);
  double kib = 0.0;
  std::string unit;
  if (!(stream >> kib >> unit) || unit != "kB") return std::nullopt;
  return kib / 1024.0;
}

}  // namespace ec

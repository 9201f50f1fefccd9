// What the report says about the machine and the process, read from Linux's /proc.
#pragma once

#include <optional>
#include <string>

namespace ec {

/// The CPU's model name (/proc/cpuinfo), else the board's model (/proc/device-tree/model, e.g. a Jetson's).
std::optional<std::string> cpu_description();

/// A field of /proc/self/status in MiB ("VmRSS", "VmHWM"); empty when unavailable.
std::optional<double> process_memory_mb(const std::string& field);

}  // namespace ec

// The command line of edgecompress-runner: parsed and checked here, TensorRT-free, so it is unit-tested.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "edgecompress/image.hpp"
#include "edgecompress/shapes.hpp"

namespace ec {

struct RunnerOptions {
  bool help = false;
  std::string engine;
  std::map<std::string, std::string> input_files;  // input name -> .ppm/.pgm/.npy/.bin file
  std::map<std::string, Shape> shapes;              // input name -> shape for dynamic inputs
  std::uint64_t seed = 0;                           // random data for inputs without a file
  ImageFit image_fit = ImageFit::letterbox;
  std::int64_t warmup = 10;
  std::int64_t iterations = 100;
  double duration_s = 0.0;  // run at least this long (and at least `iterations` times)
  bool cuda_graph = false;
  std::int64_t device = 0;
  std::string json_path;  // empty: no report file, the summary only
  std::optional<std::string> stage;      // labels copied into the report
  std::optional<std::string> target;
  std::optional<std::string> precision;
  std::optional<std::string> power_mode;
};

/// Parses and checks the arguments (without the program name); UserError naming the argument and the fix.
/// With --help, returns options with help set and nothing else checked.
RunnerOptions parse_runner_arguments(const std::vector<std::string>& args);

/// The --help text.
std::string runner_help();

}  // namespace ec

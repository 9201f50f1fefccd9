#include "edgecompress/runner_options.hpp"

#include <algorithm>

#include "edgecompress/errors.hpp"
#include "edgecompress/options.hpp"
#include "edgecompress/tensor_files.hpp"

namespace ec {

namespace {

const std::vector<std::string> kPrecisions{"fp32", "fp16", "int8"};

void add_input_file(RunnerOptions& options, const std::string& value) {
  const std::size_t equals = value.find('=');
  if (equals == std::string::npos || equals == 0 || equals + 1 == value.size()) {
    throw UserError("--input: expected NAME=FILE, got '" + value + "' (e.g. --input images=bus.ppm)");
  }
  const std::string name = value.substr(0, equals);
  const std::string path = value.substr(equals + 1);
  check_input_extension("--input " + name, path);
  if (!options.input_files.emplace(name, path).second) {
    throw UserError("--input: input '" + name + "' is given twice; give one file per input");
  }
}

void add_shapes(RunnerOptions& options, const std::string& value) {
  for (const std::string& item : split(value, ',')) {  // trtexec style: --shapes a:1x3x8x8,b:1x4
    const std::size_t colon = item.rfind(':');
    if (colon == std::string::npos || colon == 0) {
      throw UserError("--shapes: expected NAME:DIMS, got '" + item + "' (e.g. --shapes images:1x3x320x320)");
    }
    const std::string name = item.substr(0, colon);
    if (!options.shapes.emplace(name, parse_shape("--shapes " + name, item.substr(colon + 1))).second) {
      throw UserError("--shapes: input '" + name + "' is given twice; give one shape per input");
    }
  }
}

std::string choice(const std::string& option, const std::string& value, const std::vector<std::string>& allowed) {
  if (std::find(allowed.begin(), allowed.end(), value) != allowed.end()) return value;
  std::string names;
  for (const std::string& name : allowed) names += (names.empty() ? "" : ", ") + name;
  throw UserError(option + ": expected one of " + names + ", got '" + value + "'");
}

std::string label(const std::string& option, const std::string& value) {
  if (value.empty()) throw UserError(option + ": give a non-empty value or leave the option out");
  return value;
}

OptionParser runner_parser(RunnerOptions& options) {
  OptionParser parser(
      "edgecompress-runner", "--engine PATH [options]",
      "Times a serialized TensorRT engine on this device (warm-up, then --iterations timed inferences, for at least\n"
      "--duration seconds) and writes an edgecompress.latency/1 report, the schema `edgecompress profile` writes.\n"
      "Inputs without --input get seeded uniform [0, 1) data.");
  parser
      .option("--engine", "PATH", "serialized TensorRT engine built on this device (required)",
              [&](const std::string& value) { options.engine = label("--engine", value); })
      .option("--input", "NAME=FILE", "data for input NAME: image (.ppm/.pgm), float32 .npy or raw float32 .bin; repeatable",
              [&](const std::string& value) { add_input_file(options, value); })
      .option("--shapes", "NAME:DIMS", "shape of a dynamic input, e.g. images:1x3x320x320; repeatable or comma-separated",
              [&](const std::string& value) { add_shapes(options, value); })
      .option("--seed", "N", "seed of the random data for inputs without --input (default 0)",
              [&](const std::string& value) { options.seed = parse_unsigned("--seed", value); })
      .option("--image-fit", "MODE", "how images fill the input: letterbox (default, as edgecompress trains) or stretch",
              [&](const std::string& value) { options.image_fit = parse_image_fit("--image-fit", value); })
      .option("--warmup", "N", "untimed inferences first (default 10)",
              [&](const std::string& value) { options.warmup = parse_integer("--warmup", value, 0); })
      .option("--iterations", "N", "timed inferences, at least (default 100)",
              [&](const std::string& value) { options.iterations = parse_integer("--iterations", value, 1); })
      .option("--duration", "SECONDS", "keep timing until this many seconds have passed (default 0)",
              [&](const std::string& value) { options.duration_s = parse_number("--duration", value, 0.0); })
      .flag("--cuda-graph", "capture the inference into a CUDA graph and launch that", [&] { options.cuda_graph = true; })
      .option("--device", "N", "CUDA device index (default 0)",
              [&](const std::string& value) { options.device = parse_integer("--device", value, 0, 1023); })
      .option("--json", "OUT", "write the latency report (edgecompress.latency/1) to OUT",
              [&](const std::string& value) { options.json_path = label("--json", value); })
      .option("--stage", "NAME", "label: the edgecompress stage that made the engine (baseline, pruned, int8, ...)",
              [&](const std::string& value) { options.stage = label("--stage", value); })
      .option("--target", "NAME", "label: the edgecompress target name (e.g. jetson-orin-nano)",
              [&](const std::string& value) { options.target = label("--target", value); })
      .option("--precision", "P", "label: the precision the engine was built in (fp32, fp16, int8)",
              [&](const std::string& value) { options.precision = choice("--precision", value, kPrecisions); })
      .option("--power-mode", "NAME", "label: the nvpmodel mode (see `nvpmodel -q`)",
              [&](const std::string& value) { options.power_mode = label("--power-mode", value); });
  return parser;
}

}  // namespace

RunnerOptions parse_runner_arguments(const std::vector<std::string>& args) {
  RunnerOptions options;
  if (!runner_parser(options).parse(args)) {
    RunnerOptions help;
    help.help = true;
    return help;
  }
  if (options.engine.empty()) throw UserError("--engine PATH is required: the serialized TensorRT engine to time (see --help)");
  return options;
}

std::string runner_help() {
  RunnerOptions unused;
  return runner_parser(unused).help_text();
}

}  // namespace ec

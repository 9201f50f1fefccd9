// edgecompress-runner's command line: good arguments parse, bad ones name the argument and the fix.
#include "check.hpp"
#include "edgecompress/errors.hpp"
#include "edgecompress/runner_options.hpp"

using ec::parse_runner_arguments;
using ec::UserError;

EC_TEST(defaults_with_only_the_engine) {
  const ec::RunnerOptions options = parse_runner_arguments({"--engine", "model.engine"});
  EC_CHECK(!options.help);
  EC_CHECK_EQ(options.engine, "model.engine");
  EC_CHECK_EQ(options.warmup, 10);
  EC_CHECK_EQ(options.iterations, 100);
  EC_CHECK_EQ(options.duration_s, 0.0);
  EC_CHECK_EQ(options.seed, 0u);
  EC_CHECK_EQ(options.device, 0);
  EC_CHECK(!options.cuda_graph);
  EC_CHECK(options.image_fit == ec::ImageFit::letterbox);
  EC_CHECK(options.json_path.empty());
  EC_CHECK(options.input_files.empty() && options.shapes.empty());
}

EC_TEST(every_option_parses) {
  const ec::RunnerOptions options = parse_runner_arguments(
      {"--engine=yolo.engine", "--input", "images=bus.ppm", "--input", "mask=mask.npy", "--shapes", "images:1x3x320x320,mask:1x1x80x80",
       "--seed", "18446744073709551615", "--warmup", "0", "--iterations=500", "--duration", "2.5", "--cuda-graph", "--device", "1",
       "--json", "out/latency.json", "--image-fit", "stretch", "--stage", "int8", "--target", "jetson-orin-nano", "--precision", "int8",
       "--power-mode", "MAXN"});
  EC_CHECK_EQ(options.engine, "yolo.engine");
  EC_CHECK_EQ(options.input_files.at("images"), "bus.ppm");
  EC_CHECK_EQ(options.input_files.at("mask"), "mask.npy");
  EC_CHECK(options.shapes.at("images") == (ec::Shape{1, 3, 320, 320}));
  EC_CHECK(options.shapes.at("mask") == (ec::Shape{1, 1, 80, 80}));
  EC_CHECK_EQ(options.seed, 18446744073709551615ull);
  EC_CHECK_EQ(options.warmup, 0);
  EC_CHECK_EQ(options.iterations, 500);
  EC_CHECK_EQ(options.duration_s, 2.5);
  EC_CHECK(options.cuda_graph);
  EC_CHECK_EQ(options.device, 1);
  EC_CHECK_EQ(options.json_path, "out/latency.json");
  EC_CHECK(options.image_fit == ec::ImageFit::stretch);
  EC_CHECK_EQ(options.stage.value_or(""), "int8");
  EC_CHECK_EQ(options.target.value_or(""), "jetson-orin-nano");
  EC_CHECK_EQ(options.precision.value_or(""), "int8");
  EC_CHECK_EQ(options.power_mode.value_or(""), "MAXN");
}

EC_TEST(input_names_may_hold_colons_and_paths_equals) {
  const ec::RunnerOptions options =
      parse_runner_arguments({"--engine", "e", "--input", "x=a=b.bin", "--shapes", "encoder:input:1x4"});
  EC_CHECK_EQ(options.input_files.at("x"), "a=b.bin");
  EC_CHECK(options.shapes.at("encoder:input") == (ec::Shape{1, 4}));
}

EC_TEST(help_skips_the_required_checks) {
  EC_CHECK(parse_runner_arguments({"--help"}).help);
  EC_CHECK(parse_runner_arguments({"--iterations", "0", "-h"}).help);
  const std::string help = ec::runner_help();
  for (const char* option : {"--engine PATH", "--input NAME=FILE", "--shapes NAME:DIMS", "--warmup N", "--iterations N", "--duration SECONDS",
                             "--cuda-graph", "--device N", "--json OUT", "--seed N", "--help"}) {
    EC_CHECK(help.find(option) != std::string::npos);
  }
}

EC_TEST(bad_arguments_name_the_argument_and_the_fix) {
  EC_CHECK_THROWS(parse_runner_arguments({}), UserError, "--engine PATH is required");
  EC_CHECK_THROWS(parse_runner_arguments({"--engine", "e", "--iterations", "0"}), UserError, "--iterations: expected an integer >= 1, got 0");
  EC_CHECK_THROWS(parse_runner_arguments({"--engine", "e", "--iterations", "ten"}), UserError, "--iterations: expected an integer >= 1, got 'ten'");
  EC_CHECK_THROWS(parse_runner_arguments({"--engine", "e", "--iterations", "5x"}), UserError, "got '5x'");
  EC_CHECK_THROWS(parse_runner_arguments({"--engine", "e", "--warmup", "-1"}), UserError, "--warmup: expected an integer >= 0");
  EC_CHECK_THROWS(parse_runner_arguments({"--engine", "e", "--duration", "-2"}), UserError, "--duration: expected a number >= 0");
  EC_CHECK_THROWS(parse_runner_arguments({"--engine", "e", "--duration", "nan"}), UserError, "--duration");
  EC_CHECK_THROWS(parse_runner_arguments({"--engine", "e", "--seed", "-3"}), UserError, "--seed: expected an integer from 0");
  EC_CHECK_THROWS(parse_runner_arguments({"--engine", "e", "--device", "1024"}), UserError, "--device: expected an integer >= 0 and <= 1023");
  EC_CHECK_THROWS(parse_runner_arguments({"--engine", "e", "--iteration", "5"}), UserError, "unknown option '--iteration'; did you mean --iterations?");
  EC_CHECK_THROWS(parse_runner_arguments({"--engine", "e", "--frobnicate"}), UserError, "unknown option '--frobnicate' (see --help)");
  EC_CHECK_THROWS(parse_runner_arguments({"model.engine"}), UserError, "unexpected argument 'model.engine'");
  EC_CHECK_THROWS(parse_runner_arguments({"--engine"}), UserError, "--engine needs a value: --engine PATH");
  EC_CHECK_THROWS(parse_runner_arguments({"--engine", "--warmup", "3"}), UserError, "--engine needs a value");
  EC_CHECK_THROWS(parse_runner_arguments({"--engine", "e", "--cuda-graph=yes"}), UserError, "--cuda-graph takes no value");
  EC_CHECK_THROWS(parse_runner_arguments({"--engine", ""}), UserError, "--engine: give a non-empty value");
}

EC_TEST(bad_inputs_and_shapes_are_refused) {
  EC_CHECK_THROWS(parse_runner_arguments({"--engine", "e", "--input", "bus.ppm"}), UserError, "--input: expected NAME=FILE, got 'bus.ppm'");
  EC_CHECK_THROWS(parse_runner_arguments({"--engine", "e", "--input", "images="}), UserError, "expected NAME=FILE");
  EC_CHECK_THROWS(parse_runner_arguments({"--engine", "e", "--input", "images=bus.jpg"}), UserError,
                  "--input images: cannot read 'bus.jpg'; give a file ending in one of .bin, .npy, .pgm, .ppm");
  EC_CHECK_THROWS(parse_runner_arguments({"--engine", "e", "--input", "a=x.npy", "--input", "a=y.npy"}), UserError, "input 'a' is given twice");
  EC_CHECK_THROWS(parse_runner_arguments({"--engine", "e", "--shapes", "images"}), UserError, "--shapes: expected NAME:DIMS, got 'images'");
  EC_CHECK_THROWS(parse_runner_arguments({"--engine", "e", "--shapes", "images:1x3x0x320"}), UserError, "'1x3x0x320' is not a shape");
  EC_CHECK_THROWS(parse_runner_arguments({"--engine", "e", "--shapes", "images:1x3xx320"}), UserError, "is not a shape");
  EC_CHECK_THROWS(parse_runner_arguments({"--engine", "e", "--shapes", "a:1,a:2"}), UserError, "input 'a' is given twice");
  EC_CHECK_THROWS(parse_runner_arguments({"--engine", "e", "--precision", "fp8"}), UserError, "--precision: expected one of fp32, fp16, int8");
  EC_CHECK_THROWS(parse_runner_arguments({"--engine", "e", "--image-fit", "crop"}), UserError, "expected 'letterbox' or 'stretch'");
}

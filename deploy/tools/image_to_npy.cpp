// ec-image-to-npy: the NCHW float32 tensor edgecompress-runner feeds for an image, saved as .npy.
// Shows what the runner's preprocessing gives (the tests compare it with edgecompress.data.letterbox),
// and prepares .npy inputs on one machine for another.
#include <iostream>

#include "edgecompress/errors.hpp"
#include "edgecompress/files.hpp"
#include "edgecompress/image.hpp"
#include "edgecompress/options.hpp"
#include "edgecompress/tensor_files.hpp"

namespace {

int run(const std::vector<std::string>& args) {
  std::string image_path, out_path;
  ec::Shape shape;
  ec::ImageFit fit = ec::ImageFit::letterbox;
  ec::OptionParser parser("ec-image-to-npy", "--image FILE --shape NxCxHxW --out FILE.npy [--image-fit MODE]",
                          "Writes the NCHW float32 tensor edgecompress-runner would feed for a binary PPM/PGM image.");
  parser.option("--image", "FILE", "binary PPM (P6) or PGM (P5) image (required)", [&](const std::string& v) { image_path = v; })
      .option("--shape", "NxCxHxW", "input shape, e.g. 1x3x320x320 (required)", [&](const std::string& v) { shape = ec::parse_shape("--shape", v); })
      .option("--image-fit", "MODE", "letterbox (default) or stretch", [&](const std::string& v) { fit = ec::parse_image_fit("--image-fit", v); })
      .option("--out", "FILE.npy", "where to write the tensor (required)", [&](const std::string& v) { out_path = v; });
  if (!parser.parse(args)) {
    std::cout << parser.help_text();
    return 0;
  }
  if (image_path.empty() || shape.empty() || out_path.empty()) throw ec::UserError("--image, --shape and --out are required (see --help)");
  ec::check_readable_file(image_path, "image", "pass a binary PPM/PGM file with --image FILE");
  ec::check_output_path(out_path, "--out");
  ec::write_npy(out_path, shape, ec::image_to_nchw(ec::read_pnm(image_path), shape, fit));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return ec::run_main("ec-image-to-npy", [&] { return run(std::vector<std::string>(argv + 1, argv + argc)); });
}

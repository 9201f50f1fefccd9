// Binary PPM/PGM files the test writes itself, resized and letterboxed into NCHW float32.
#include <cmath>

#include "check.hpp"
#include "edgecompress/errors.hpp"
#include "edgecompress/image.hpp"
#include "edgecompress/tensor_files.hpp"

using ec::Image;
using ec::ImageFit;
using ec::UserError;

namespace {

constexpr float kPad = 114.0f / 255.0f;

std::string pnm(const std::string& header, const std::vector<unsigned char>& samples) {
  return header + std::string(samples.begin(), samples.end());
}

Image constant_image(int width, int height, int channels, float value) {
  return Image{width, height, channels, std::vector<float>(static_cast<std::size_t>(width) * height * channels, value)};
}

}  // namespace

EC_TEST(ppm_with_comments_reads_rgb_in_unit_range) {
  ec_test::TempDir folder;
  // 2x1 RGB: red, then (0, 51, 255); a comment and CRLF-free whitespace in the header.
  ec_test::write_bytes(folder.file("a.ppm"), pnm("P6\n# made by the test\n2 1\n255\n", {255, 0, 0, 0, 51, 255}));
  const Image image = ec::read_pnm(folder.file("a.ppm"));
  EC_CHECK_EQ(image.width, 2);
  EC_CHECK_EQ(image.height, 1);
  EC_CHECK_EQ(image.channels, 3);
  EC_CHECK(image.pixels == (std::vector<float>{1.0f, 0.0f, 0.0f, 0.0f, 0.2f, 1.0f}));
}

EC_TEST(pgm_8_and_16_bit) {
  ec_test::TempDir folder;
  ec_test::write_bytes(folder.file("g.pgm"), pnm("P5 3 1 100 ", {0, 50, 100}));
  EC_CHECK(ec::read_pnm(folder.file("g.pgm")).pixels == (std::vector<float>{0.0f, 0.5f, 1.0f}));
  ec_test::write_bytes(folder.file("w.pgm"), pnm("P5\n2 1\n65535\n", {0xFF, 0xFF, 0x80, 0x00}));  // big-endian samples
  const Image wide = ec::read_pnm(folder.file("w.pgm"));
  EC_CHECK_EQ(wide.channels, 1);
  EC_CHECK_EQ(wide.pixels[0], 1.0f);
  EC_CHECK_NEAR(wide.pixels[1], 32768.0 / 65535.0, 1e-7);
}

EC_TEST(bad_pnm_files_are_explained) {
  ec_test::TempDir folder;
  ec_test::write_bytes(folder.file("ascii.ppm"), "P3\n1 1\n255\n255 0 0\n");
  EC_CHECK_THROWS(ec::read_pnm(folder.file("ascii.ppm")), UserError, "is not a binary PPM (P6) or PGM (P5) image; convert it");
  ec_test::write_bytes(folder.file("short.ppm"), pnm("P6\n2 2\n255\n", {1, 2, 3}));
  EC_CHECK_THROWS(ec::read_pnm(folder.file("short.ppm")), UserError, "is truncated: 2x2 needs 12 bytes of samples, it has 3");
  ec_test::write_bytes(folder.file("zero.pgm"), pnm("P5\n0 2\n255\n", {}));
  EC_CHECK_THROWS(ec::read_pnm(folder.file("zero.pgm")), UserError, "must be positive");
  ec_test::write_bytes(folder.file("nowidth.pgm"), "P5\n# only a comment");
  EC_CHECK_THROWS(ec::read_pnm(folder.file("nowidth.pgm")), UserError, "bad width");
  ec_test::write_bytes(folder.file("huge.pgm"), "P5\n99999999 1\n255\n");
  EC_CHECK_THROWS(ec::read_pnm(folder.file("huge.pgm")), UserError, "bad width");
}

EC_TEST(resize_keeps_constants_and_same_size_images) {
  const Image grey = constant_image(7, 5, 3, 0.25f);
  for (const auto& size : {std::make_pair(3, 2), std::make_pair(14, 11), std::make_pair(1, 1)}) {
    const Image resized = ec::resize_bilinear(grey, size.first, size.second);
    EC_CHECK_EQ(resized.pixels.size(), static_cast<std::size_t>(size.first * size.second * 3));
    for (const float value : resized.pixels) EC_CHECK_NEAR(value, 0.25, 1e-6);
  }
  Image ramp{4, 1, 1, {0.0f, 0.25f, 0.5f, 1.0f}};
  EC_CHECK(ec::resize_bilinear(ramp, 4, 1).pixels == ramp.pixels);
}

EC_TEST(resize_filters_like_a_widened_triangle) {
  // Halving [0, 1, 0, 1]: output 0 is centred on source 1.0 and covers source pixels 0..2 with
  // weights 0.75, 0.75, 0.25 (the triangle spans two source pixels each side), so 0.75 / 1.75.
  const Image halved = ec::resize_bilinear(Image{4, 1, 1, {0.0f, 1.0f, 0.0f, 1.0f}}, 2, 1);
  EC_CHECK_NEAR(halved.pixels[0], 0.75 / 1.75, 1e-6);
  EC_CHECK_NEAR(halved.pixels[1], (0.25 * 1 + 0.75 * 0 + 0.75 * 1) / 1.75, 1e-6);
  // Doubling [0, 1]: outputs sit at source 0.25 and 0.75 of each pixel's span; the edges clamp.
  const Image doubled = ec::resize_bilinear(Image{2, 1, 1, {0.0f, 1.0f}}, 4, 1);
  EC_CHECK((doubled.pixels == std::vector<float>{0.0f, 0.25f, 0.75f, 1.0f}));
}

EC_TEST(letterbox_centres_on_grey) {
  // A 4x2 white image into 8x8: scaled x2 to 8x4, two grey rows above and below.
  const std::vector<float> tensor = ec::image_to_nchw(constant_image(4, 2, 3, 1.0f), {1, 3, 8, 8}, ImageFit::letterbox);
  EC_CHECK_EQ(tensor.size(), 192u);
  for (int c = 0; c < 3; ++c) {
    for (int y = 0; y < 8; ++y) {
      const float expected = (y >= 2 && y < 6) ? 1.0f : kPad;
      for (int x = 0; x < 8; ++x) EC_CHECK_NEAR(tensor[(c * 8 + y) * 8 + x], expected, 1e-6);
    }
  }
  // A 3x1 image into 1x4: ratio 4/3, width 4, height round(1.333) = 1; pad round(1.5) = 2 (half to even, as Python).
  const std::vector<float> wide = ec::image_to_nchw(constant_image(3, 1, 1, 0.0f), {1, 1, 4, 4}, ImageFit::letterbox);
  for (int y = 0; y < 4; ++y) EC_CHECK_NEAR(wide[y * 4], y == 2 ? 0.0 : kPad, 1e-6);
}

EC_TEST(stretch_fills_the_input) {
  const std::vector<float> tensor = ec::image_to_nchw(constant_image(4, 2, 3, 0.5f), {1, 3, 8, 8}, ImageFit::stretch);
  for (const float value : tensor) EC_CHECK_NEAR(value, 0.5, 1e-6);
}

EC_TEST(channels_and_batch) {
  // Grey to three channels, copied into every batch item; RGB to one channel by ITU-R 601 luma.
  const std::vector<float> grey = ec::image_to_nchw(constant_image(2, 2, 1, 0.4f), {2, 3, 2, 2}, ImageFit::stretch);
  EC_CHECK_EQ(grey.size(), 24u);
  for (const float value : grey) EC_CHECK_NEAR(value, 0.4, 1e-6);
  const Image red{1, 1, 3, {1.0f, 0.0f, 0.0f}};
  EC_CHECK_NEAR(ec::image_to_nchw(red, {1, 1, 1, 1}, ImageFit::stretch)[0], 0.299, 1e-6);
  const Image rgb{1, 1, 3, {0.1f, 0.2f, 0.3f}};
  EC_CHECK((ec::image_to_nchw(rgb, {1, 3, 1, 1}, ImageFit::stretch) == std::vector<float>{0.1f, 0.2f, 0.3f}));  // NCHW planes
}

EC_TEST(images_need_an_nchw_input) {
  EC_CHECK_THROWS(ec::image_to_nchw(constant_image(2, 2, 3, 0.0f), {1, 320, 320, 3}, ImageFit::letterbox), UserError,
                  "an image can feed only an NCHW input with 1 or 3 channels, not one of shape 1x320x320x3; give a .npy or .bin");
  EC_CHECK_THROWS(ec::image_to_nchw(constant_image(2, 2, 3, 0.0f), {3, 2, 2}, ImageFit::letterbox), UserError, "NCHW");
}

EC_TEST(image_inputs_load_by_extension) {
  ec_test::TempDir folder;
  ec_test::write_bytes(folder.file("dot.PPM"), pnm("P6\n1 1\n255\n", {255, 255, 255}));
  const std::vector<float> tensor = ec::load_input_file("images", folder.file("dot.PPM"), {1, 3, 2, 2}, ImageFit::stretch);
  EC_CHECK_EQ(tensor.size(), 12u);
  for (const float value : tensor) EC_CHECK_NEAR(value, 1.0, 1e-6);
}

// Input tensors from .npy and .bin files the test writes itself, seeded random data, float16 encoding.
#include <cstring>

#include "check.hpp"
#include "edgecompress/errors.hpp"
#include "edgecompress/tensor_files.hpp"

using ec::Shape;
using ec::UserError;

namespace {

std::string le_float_bytes(const std::vector<float>& values) {
  std::string bytes(values.size() * 4, '\0');
  std::memcpy(&bytes[0], values.data(), bytes.size());  // the test hosts are little-endian, as every Jetson
  return bytes;
}

/// A .npy file as numpy.save writes it: magic, version, header length, padded header dictionary, data.
std::string npy_file(const std::string& descr, const std::string& shape, const std::string& data, bool fortran = false, int version = 1) {
  std::string header = "{'descr': '" + descr + "', 'fortran_order': " + (fortran ? "True" : "False") + ", 'shape': " + shape + ", }";
  const std::size_t prefix = version == 1 ? 10 : 12;
  header.append((64 - (prefix + header.size() + 1) % 64) % 64, ' ');
  header += '\n';
  std::string out = "\x93NUMPY";
  out += static_cast<char>(version);
  out += '\0';
  out += static_cast<char>(header.size() & 0xFF);
  out += static_cast<char>(header.size() >> 8);
  if (version != 1) out += std::string(2, '\0');
  return out + header + data;
}

}  // namespace

EC_TEST(npy_float32_files_load) {
  ec_test::TempDir folder;
  const std::vector<float> values{0.5f, -1.25f, 3.0f, 4.5f, 1e-3f, 7.0f};
  ec_test::write_bytes(folder.file("a.npy"), npy_file("<f4", "(1, 2, 3)", le_float_bytes(values)));
  const ec::NpyArray array = ec::read_npy(folder.file("a.npy"));
  EC_CHECK(array.shape == (Shape{1, 2, 3}));
  EC_CHECK(array.data == values);
  ec_test::write_bytes(folder.file("v2.npy"), npy_file("<f4", "(6,)", le_float_bytes(values), false, 2));
  EC_CHECK(ec::read_npy(folder.file("v2.npy")).shape == (Shape{6}));
  EC_CHECK(ec::load_input_file("x", folder.file("a.npy"), {1, 2, 3}, ec::ImageFit::letterbox) == values);
}

EC_TEST(npy_written_reads_back) {
  ec_test::TempDir folder;
  const std::vector<float> values{1, 2, 3, 4, 5, 6};
  for (const Shape& shape : {Shape{2, 3}, Shape{6}, Shape{1, 1, 6}}) {
    ec::write_npy(folder.file("w.npy"), shape, values);
    const ec::NpyArray array = ec::read_npy(folder.file("w.npy"));
    EC_CHECK(array.shape == shape);
    EC_CHECK(array.data == values);
  }
}

EC_TEST(npy_problems_say_how_to_save_it) {
  ec_test::TempDir folder;
  const std::string data = le_float_bytes({1, 2});
  ec_test::write_bytes(folder.file("f8.npy"), npy_file("<f8", "(1,)", std::string(8, '\0')));
  EC_CHECK_THROWS(ec::read_npy(folder.file("f8.npy")), UserError, "holds '<f8' values, not little-endian float32 ('<f4'); save array.astype('<f4')");
  ec_test::write_bytes(folder.file("big.npy"), npy_file(">f4", "(2,)", data));
  EC_CHECK_THROWS(ec::read_npy(folder.file("big.npy")), UserError, "'>f4'");
  ec_test::write_bytes(folder.file("fortran.npy"), npy_file("<f4", "(1, 2)", data, true));
  EC_CHECK_THROWS(ec::read_npy(folder.file("fortran.npy")), UserError, "Fortran order; save numpy.ascontiguousarray");
  ec_test::write_bytes(folder.file("short.npy"), npy_file("<f4", "(3,)", data));
  EC_CHECK_THROWS(ec::read_npy(folder.file("short.npy")), UserError, "a 3 float32 array needs 12 bytes of data, the file has 8");
  ec_test::write_bytes(folder.file("text.npy"), "not numpy");
  EC_CHECK_THROWS(ec::read_npy(folder.file("text.npy")), UserError, "is not a .npy file");
  ec_test::write_bytes(folder.file("two.npy"), npy_file("<f4", "(1, 2)", data));
  EC_CHECK_THROWS(ec::load_input_file("images", folder.file("two.npy"), {2, 1}, ec::ImageFit::letterbox), UserError,
                  "holds a 1x2 array but input 'images' runs with shape 2x1");
}

EC_TEST(raw_bin_size_is_checked) {
  ec_test::TempDir folder;
  const std::vector<float> values{1, 2, 3, 4, 5, 6};
  ec_test::write_bytes(folder.file("x.bin"), le_float_bytes(values));
  EC_CHECK(ec::read_raw_float32(folder.file("x.bin"), {1, 6}) == values);
  EC_CHECK(ec::load_input_file("x", folder.file("x.bin"), {2, 3}, ec::ImageFit::stretch) == values);
  EC_CHECK_THROWS(ec::read_raw_float32(folder.file("x.bin"), {1, 3, 2, 2}), UserError,
                  "has 24 bytes but a 1x3x2x2 float32 input needs 48 (12 values x 4 bytes)");
}

EC_TEST(input_files_are_checked_first) {
  ec_test::TempDir folder;
  EC_CHECK_THROWS(ec::load_input_file("images", folder.file("missing.npy"), {1}, ec::ImageFit::letterbox), UserError,
                  "input file for 'images' not found");
  EC_CHECK_THROWS(ec::check_input_extension("--input images", "photo.jpg"), UserError, "give a file ending in one of");
  ec::check_input_extension("--input images", "photo.PPM");
}

EC_TEST(random_input_is_seeded_and_in_unit_range) {
  const std::vector<float> a = ec::random_input(1000, 7);
  EC_CHECK(a == ec::random_input(1000, 7));
  EC_CHECK(a != ec::random_input(1000, 8));
  float low = 1.0f, high = 0.0f;
  for (const float value : a) {
    low = std::min(low, value);
    high = std::max(high, value);
  }
  EC_CHECK(low >= 0.0f && low < 0.01f);
  EC_CHECK(high < 1.0f && high > 0.99f);
}

EC_TEST(float16_bits_round_to_nearest_even) {
  EC_CHECK_EQ(ec::float_to_half(1.0f), 0x3C00);
  EC_CHECK_EQ(ec::float_to_half(-2.0f), 0xC000);
  EC_CHECK_EQ(ec::float_to_half(0.5f), 0x3800);
  EC_CHECK_EQ(ec::float_to_half(0.1f), 0x2E66);
  EC_CHECK_EQ(ec::float_to_half(65504.0f), 0x7BFF);
  EC_CHECK_EQ(ec::float_to_half(65520.0f), 0x7C00);         // rounds up to infinity
  EC_CHECK_EQ(ec::float_to_half(1.0f + 1.0f / 2048), 0x3C00);  // halfway, to even
  EC_CHECK_EQ(ec::float_to_half(1.0f + 3.0f / 2048), 0x3C02);  // halfway, to even (up)
  EC_CHECK_EQ(ec::float_to_half(5.9604645e-8f), 0x0001);       // smallest subnormal
  EC_CHECK_EQ(ec::float_to_half(6.097555e-5f), 0x03FF);        // largest subnormal
  EC_CHECK_EQ(ec::float_to_half(2.9802322e-8f), 0x0000);       // half the smallest subnormal: to even (zero)
  EC_CHECK_EQ(ec::float_to_half(1e-10f), 0x0000);
  EC_CHECK_EQ(ec::float_to_half(-0.0f), 0x8000);
  EC_CHECK_EQ(ec::float_to_half(1.0f / 0.0f), 0x7C00);
  EC_CHECK((ec::float_to_half(0.0f / 0.0f) & 0x7C00) == 0x7C00 && (ec::float_to_half(0.0f / 0.0f) & 0x3FF) != 0);
  const std::vector<unsigned char> bytes = ec::encode_tensor({1.0f, -2.0f}, ec::ElementType::float16);
  EC_CHECK_EQ(bytes.size(), 4u);
  EC_CHECK_EQ(ec::encode_tensor({1.0f, -2.0f}, ec::ElementType::float32).size(), 8u);
}

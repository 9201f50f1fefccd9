// Input tensors: float32 .npy and raw .bin files, images, seeded random data, and their encoding per element type.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "edgecompress/image.hpp"
#include "edgecompress/shapes.hpp"

namespace ec {

struct NpyArray {
  Shape shape;
  std::vector<float> data;
};

/// Reads a float32 ('<f4'), C-order .npy file (format versions 1.0, 2.0, 3.0).
NpyArray read_npy(const std::string& path);

/// Writes `data` of `shape` as a version 1.0 float32 .npy file (atomically).
void write_npy(const std::string& path, const Shape& shape, const std::vector<float>& data);

/// Reads raw little-endian float32 values; UserError unless the file holds exactly `shape`'s element count.
std::vector<float> read_raw_float32(const std::string& path, const Shape& shape);

/// Loads input `name` of `shape` from `path`, chosen by extension: .ppm/.pgm (image, fitted per `fit`),
/// .npy (its shape must equal `shape`) or .bin (raw float32).
std::vector<float> load_input_file(const std::string& name, const std::string& path, const Shape& shape, ImageFit fit);

/// UserError unless `path` has an extension load_input_file reads (checked while parsing arguments).
void check_input_extension(const std::string& option, const std::string& path);

/// `count` values uniform in [0, 1) from a 64-bit Mersenne Twister seeded with `seed`: the same on every platform.
std::vector<float> random_input(std::int64_t count, std::uint64_t seed);

/// Element types the runner can feed an engine's input with.
enum class ElementType { float32, float16 };

const char* element_type_name(ElementType type);
std::size_t element_size(ElementType type);

/// IEEE 754 binary16 bits of `value`, rounded to nearest even (overflow to infinity, NaN kept).
std::uint16_t float_to_half(float value);

/// `values` as the bytes of a tensor of `type` (native byte order).
std::vector<unsigned char> encode_tensor(const std::vector<float>& values, ElementType type);

}  // namespace ec

#include "edgecompress/tensor_files.hpp"

#include <algorithm>
#include <cctype>
#include <cstring>
#include <functional>
#include <map>
#include <random>

#include "edgecompress/errors.hpp"
#include "edgecompress/files.hpp"

namespace ec {

namespace {

constexpr char kNpyMagic[] = "\x93NUMPY";
constexpr std::size_t kNpyMagicSize = 6;

bool little_endian_host() {
  const std::uint16_t probe = 1;
  unsigned char first;
  std::memcpy(&first, &probe, 1);
  return first == 1;
}

/// Little-endian float32 bytes to floats, on any host.
std::vector<float> floats_from_little_endian(const char* bytes, std::size_t count) {
  std::vector<float> values(count);
  if (little_endian_host()) {
    std::memcpy(values.data(), bytes, count * sizeof(float));
    return values;
  }
  for (std::size_t i = 0; i < count; ++i) {
    char swapped[4] = {bytes[4 * i + 3], bytes[4 * i + 2], bytes[4 * i + 1], bytes[4 * i]};
    std::memcpy(&values[i], swapped, 4);
  }
  return values;
}

/// The value text of `key` in a .npy header dictionary ("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }").
std::string npy_header_value(const std::string& header, const std::string& key, const std::string& path) {
  const std::string quoted = "'" + key + "'";
  std::size_t at = header.find(quoted);
  if (at == std::string::npos) throw UserError(path + ": the .npy header has no " + quoted + "; re-save it with numpy.save");
  at = header.find(':', at + quoted.size());
  if (at == std::string::npos) throw UserError(path + ": malformed .npy header; re-save it with numpy.save");
  ++at;
  while (at < header.size() && header[at] == ' ') ++at;
  const char open = at < header.size() ? header[at] : '\0';
  const char close = open == '(' ? ')' : open == '\'' ? '\'' : '\0';
  std::size_t end = close ? header.find(close, at + 1) : header.find_first_of(",}", at);
  if (end == std::string::npos) throw UserError(path + ": malformed .npy header; re-save it with numpy.save");
  return header.substr(at, end - at + (close ? 1 : 0));
}

Shape npy_shape(const std::string& tuple, const std::string& path) {
  Shape shape;
  std::string number;
  for (std::size_t i = 1; i < tuple.size(); ++i) {  // after '('
    const char c = tuple[i];
    if (std::isdigit(static_cast<unsigned char>(c))) {
      number += c;
    } else if (c == ',' || c == ')') {
      if (!number.empty()) shape.push_back(std::stoll(number));
      number.clear();
    } else if (c != ' ') {
      throw UserError(path + ": bad shape " + tuple + " in the .npy header; re-save it with numpy.save");
    }
  }
  return shape;
}

std::int64_t checked_count(const Shape& shape, const std::string& path) {
  std::int64_t count = 1;
  for (const std::int64_t dim : shape) {
    if (dim != 0 && count > INT64_MAX / dim) throw UserError(path + ": the array's shape is too large");
    count *= dim;
  }
  return count;
}

using InputLoader = std::function<std::vector<float>(const std::string& name, const std::string& path, const Shape&, ImageFit)>;

std::vector<float> load_image_input(const std::string&, const std::string& path, const Shape& shape, ImageFit fit) {
  return image_to_nchw(read_pnm(path), shape, fit);
}

std::vector<float> load_npy_input(const std::string& name, const std::string& path, const Shape& shape, ImageFit) {
  NpyArray array = read_npy(path);
  if (array.shape != shape) {
    throw UserError(path + " holds a " + format_shape(array.shape) + " array but input '" + name + "' runs with shape " +
                    format_shape(shape) + "; save an array of that shape (or set the input's shape with --shapes)");
  }
  return std::move(array.data);
}

std::vector<float> load_raw_input(const std::string&, const std::string& path, const Shape& shape, ImageFit) {
  return read_raw_float32(path, shape);
}

/// Input file readers by extension.
const std::map<std::string, InputLoader>& input_loaders() {
  static const std::map<std::string, InputLoader> loaders{
      {".ppm", load_image_input}, {".pgm", load_image_input}, {".npy", load_npy_input}, {".bin", load_raw_input}};
  return loaders;
}

std::string supported_extensions() {
  std::string names;
  for (const auto& loader : input_loaders()) names += (names.empty() ? "" : ", ") + loader.first;
  return names;
}

}  // namespace

NpyArray read_npy(const std::string& path) {
  const std::vector<char> data = read_file(path);
  if (data.size() < kNpyMagicSize + 4 || std::memcmp(data.data(), kNpyMagic, kNpyMagicSize) != 0) {
    throw UserError(path + " is not a .npy file; write it with numpy.save(path, array.astype(numpy.float32))");
  }
  const auto byte = [&](std::size_t i) { return static_cast<std::uint32_t>(static_cast<unsigned char>(data[i])); };
  const unsigned major = byte(6);
  std::size_t header_start, header_size;
  if (major == 1) {
    header_start = 10;
    header_size = byte(8) | (byte(9) << 8);
  } else if ((major == 2 || major == 3) && data.size() >= 12) {
    header_start = 12;
    header_size = byte(8) | (byte(9) << 8) | (byte(10) << 16) | (byte(11) << 24);
  } else {
    throw UserError(path + ": .npy format version " + std::to_string(major) + " is not supported; re-save it with numpy.save");
  }
  if (data.size() < header_start + header_size) throw UserError(path + " is truncated inside its .npy header; re-save it");
  const std::string header(data.data() + header_start, header_size);
  const std::string descr = npy_header_value(header, "descr", path);
  if (descr != "'<f4'") {
    throw UserError(path + " holds " + descr + " values, not little-endian float32 ('<f4'); save array.astype('<f4') instead");
  }
  if (npy_header_value(header, "fortran_order", path) != "False") {
    throw UserError(path + " is in Fortran order; save numpy.ascontiguousarray(array) instead");
  }
  NpyArray array;
  array.shape = npy_shape(npy_header_value(header, "shape", path), path);
  const std::int64_t count = checked_count(array.shape, path);
  const std::size_t payload = data.size() - header_start - header_size;
  if (payload != static_cast<std::size_t>(count) * sizeof(float)) {
    throw UserError(path + ": a " + format_shape(array.shape) + " float32 array needs " + std::to_string(count * 4) + " bytes of data, the file has " +
                    std::to_string(payload) + "; re-save it");
  }
  array.data = floats_from_little_endian(data.data() + header_start + header_size, static_cast<std::size_t>(count));
  return array;
}

void write_npy(const std::string& path, const Shape& shape, const std::vector<float>& data) {
  std::string dims;
  for (const std::int64_t dim : shape) dims += std::to_string(dim) + ", ";
  if (shape.size() > 1) dims.erase(dims.size() - 2);  // "(2, 3)" but "(2,)" for one dimension
  if (shape.size() == 1) dims.erase(dims.size() - 1);
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + dims + "), }";
  const std::size_t unpadded = kNpyMagicSize + 4 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');  // numpy aligns the data to 64 bytes
  header += '\n';
  std::string out(kNpyMagic, kNpyMagicSize);
  out += '\x01';
  out += '\x00';
  out += static_cast<char>(header.size() & 0xFF);
  out += static_cast<char>((header.size() >> 8) & 0xFF);
  out += header;
  for (const float value : data) {
    char bytes[4];
    std::memcpy(bytes, &value, 4);
    if (!little_endian_host()) std::reverse(bytes, bytes + 4);
    out.append(bytes, 4);
  }
  write_file_atomically(path, out);
}

std::vector<float> read_raw_float32(const std::string& path, const Shape& shape) {
  const std::int64_t count = element_count(shape);
  const std::uint64_t expected = static_cast<std::uint64_t>(count) * sizeof(float);
  const std::uint64_t size = file_size(path);
  if (size != expected) {
    throw UserError(path + " has " + std::to_string(size) + " bytes but a " + format_shape(shape) + " float32 input needs " +
                    std::to_string(expected) + " (" + std::to_string(count) + " values x 4 bytes); write array.astype('<f4').tofile(path)");
  }
  const std::vector<char> data = read_file(path);
  return floats_from_little_endian(data.data(), static_cast<std::size_t>(count));
}

std::vector<float> load_input_file(const std::string& name, const std::string& path, const Shape& shape, ImageFit fit) {
  check_input_extension("--input " + name, path);
  check_readable_file(path, "input file for '" + name + "'", "check the path given to --input " + name + "=FILE");
  std::vector<float> values = input_loaders().at(lower_extension(path))(name, path, shape, fit);
  if (static_cast<std::int64_t>(values.size()) != element_count(shape)) {
    throw std::logic_error("input loader returned the wrong number of values");
  }
  return values;
}

void check_input_extension(const std::string& option, const std::string& path) {
  if (input_loaders().count(lower_extension(path)) == 0) {
    throw UserError(option + ": cannot read '" + path + "'; give a file ending in one of " + supported_extensions() +
                    " (images: binary PPM/PGM; tensors: float32 .npy or raw float32 .bin)");
  }
}

std::vector<float> random_input(std::int64_t count, std::uint64_t seed) {
  std::mt19937_64 generator(seed);  // the standard fixes its output sequence, unlike its distributions'
  std::vector<float> values(static_cast<std::size_t>(count));
  for (float& value : values) value = static_cast<float>(generator() >> 40) * (1.0f / 16777216.0f);  // 24 bits: [0, 1)
  return values;
}

const char* element_type_name(ElementType type) { return type == ElementType::float32 ? "float32" : "float16"; }

std::size_t element_size(ElementType type) { return type == ElementType::float32 ? 4 : 2; }

std::uint16_t float_to_half(float value) {
  std::uint32_t bits;
  std::memcpy(&bits, &value, 4);
  const std::uint16_t sign = static_cast<std::uint16_t>((bits >> 16) & 0x8000u);
  const std::uint32_t exponent = (bits >> 23) & 0xFFu;
  std::uint32_t mantissa = bits & 0x7FFFFFu;
  if (exponent == 0xFF) return static_cast<std::uint16_t>(sign | 0x7C00u | (mantissa ? 0x200u : 0u));  // inf or NaN
  const int half_exponent = static_cast<int>(exponent) - 127 + 15;
  if (half_exponent >= 31) return static_cast<std::uint16_t>(sign | 0x7C00u);  // overflow
  if (half_exponent <= 0) {                                                      // subnormal half or zero
    if (half_exponent < -10) return sign;
    mantissa |= 0x800000u;  // the implicit leading one
    const int shift = 14 - half_exponent;
    std::uint32_t half_mantissa = mantissa >> shift;
    const std::uint32_t remainder = mantissa & ((1u << shift) - 1);
    const std::uint32_t halfway = 1u << (shift - 1);
    if (remainder > halfway || (remainder == halfway && (half_mantissa & 1u))) ++half_mantissa;
    return static_cast<std::uint16_t>(sign | half_mantissa);
  }
  std::uint32_t half = (static_cast<std::uint32_t>(half_exponent) << 10) | (mantissa >> 13);
  const std::uint32_t remainder = mantissa & 0x1FFFu;
  if (remainder > 0x1000u || (remainder == 0x1000u && (half & 1u))) ++half;  // may carry into the exponent: still correct
  return static_cast<std::uint16_t>(sign | half);
}

std::vector<unsigned char> encode_tensor(const std::vector<float>& values, ElementType type) {
  std::vector<unsigned char> bytes(values.size() * element_size(type));
  if (type == ElementType::float32) {
    std::memcpy(bytes.data(), values.data(), bytes.size());
    return bytes;
  }
  for (std::size_t i = 0; i < values.size(); ++i) {
    const std::uint16_t half = float_to_half(values[i]);
    std::memcpy(&bytes[2 * i], &half, 2);
  }
  return bytes;
}

}  // namespace ec

#include "edgecompress/image.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>

#include "edgecompress/errors.hpp"
#include "edgecompress/files.hpp"

namespace ec {

namespace {

constexpr float kPadValue = 114.0f / 255.0f;  // edgecompress.data.preprocess.PAD_VALUE, YOLOv5/v8's grey
constexpr int kMaxSide = 1 << 16;

/// Reads the PNM header's whitespace-separated decimal fields, skipping '#' comments.
class PnmHeaderReader {
 public:
  PnmHeaderReader(const std::vector<char>& data, const std::string& path) : data_(data), path_(path) {}

  int next_number(const char* field) {
    skip_space_and_comments();
    long long value = 0;
    std::size_t digits = 0;
    while (at_ < data_.size() && std::isdigit(static_cast<unsigned char>(data_[at_])) && digits < 10) {
      value = value * 10 + (data_[at_++] - '0');
      ++digits;
    }
    if (digits == 0 || value > kMaxSide) {
      throw UserError(path_ + ": bad " + std::string(field) + " in the PPM/PGM header; re-save it as a binary PPM (P6) or PGM (P5)");
    }
    return static_cast<int>(value);
  }

  /// Offset of the first sample: the header ends with exactly one whitespace character after maxval.
  std::size_t raster_offset() {
    if (at_ >= data_.size() || !std::isspace(static_cast<unsigned char>(data_[at_]))) {
      throw UserError(path_ + ": no whitespace after the PPM/PGM header; re-save the image");
    }
    return at_ + 1;
  }

 private:
  void skip_space_and_comments() {
    while (at_ < data_.size()) {
      if (data_[at_] == '#') {
        while (at_ < data_.size() && data_[at_] != '\n' && data_[at_] != '\r') ++at_;
      } else if (std::isspace(static_cast<unsigned char>(data_[at_]))) {
        ++at_;
      } else {
        return;
      }
    }
  }

  const std::vector<char>& data_;
  const std::string& path_;
  std::size_t at_ = 2;  // after the magic number
};

struct Filter {
  std::size_t first;             // first source index
  std::vector<double> weights;   // normalised, one per source index from `first`
};

/// One output position's source indices and triangle-filter weights; the filter spans one source pixel
/// when enlarging and `scale` of them when shrinking (PIL's BILINEAR support).
std::vector<Filter> triangle_filters(int in_size, int out_size) {
  const double scale = static_cast<double>(in_size) / out_size;
  const double filter_scale = std::max(scale, 1.0);
  const double support = filter_scale;
  std::vector<Filter> filters(static_cast<std::size_t>(out_size));
  for (int out = 0; out < out_size; ++out) {
    const double centre = (out + 0.5) * scale;
    const int first = std::max(0, static_cast<int>(std::floor(centre - support + 0.5)));
    const int last = std::min(in_size, static_cast<int>(std::floor(centre + support + 0.5)));
    Filter& filter = filters[static_cast<std::size_t>(out)];
    filter.first = static_cast<std::size_t>(first);
    double total = 0.0;
    for (int in = first; in < last; ++in) {
      const double weight = std::max(0.0, 1.0 - std::abs((in - centre + 0.5) / filter_scale));
      filter.weights.push_back(weight);
      total += weight;
    }
    if (total <= 0.0) {  // cannot happen for sizes >= 1; kept safe by sampling the nearest pixel
      filter.first = static_cast<std::size_t>(std::min(in_size - 1, static_cast<int>(centre)));
      filter.weights.assign(1, 1.0);
      total = 1.0;
    }
    for (double& weight : filter.weights) weight /= total;
  }
  return filters;
}

/// Sample of `image` at (x, y, channel) converted to `channels` channels.
float sample(const Image& image, std::size_t index, int channels, int channel) {
  const float* pixel = &image.pixels[index * static_cast<std::size_t>(image.channels)];
  if (image.channels == channels) return pixel[channel];
  if (image.channels == 1) return pixel[0];                          // grey repeated to RGB
  return 0.299f * pixel[0] + 0.587f * pixel[1] + 0.114f * pixel[2];  // RGB to luma, ITU-R 601 (PIL's "L")
}

/// Python's round(): half to even, as edgecompress.data.letterbox computes its sizes and padding.
int round_half_even(double value) { return static_cast<int>(std::nearbyint(value)); }

}  // namespace

ImageFit parse_image_fit(const std::string& option, const std::string& text) {
  if (text == "letterbox") return ImageFit::letterbox;
  if (text == "stretch") return ImageFit::stretch;
  throw UserError(option + ": expected 'letterbox' or 'stretch', got '" + text + "'");
}

Image read_pnm(const std::string& path) {
  const std::vector<char> data = read_file(path);
  const bool ppm = data.size() >= 2 && data[0] == 'P' && data[1] == '6';
  const bool pgm = data.size() >= 2 && data[0] == 'P' && data[1] == '5';
  if (!ppm && !pgm) {
    throw UserError(path + " is not a binary PPM (P6) or PGM (P5) image; convert it, e.g. with ImageMagick: convert in.jpg -depth 8 out.ppm");
  }
  PnmHeaderReader header(data, path);
  Image image;
  image.width = header.next_number("width");
  image.height = header.next_number("height");
  const int maxval = header.next_number("maxval");
  if (image.width < 1 || image.height < 1 || maxval < 1 || maxval > 65535) {
    throw UserError(path + ": width, height and maxval must be positive (maxval <= 65535); re-save the image");
  }
  image.channels = ppm ? 3 : 1;
  const std::size_t offset = header.raster_offset();
  const std::size_t bytes_per_sample = maxval > 255 ? 2 : 1;
  const std::size_t samples = static_cast<std::size_t>(image.width) * image.height * image.channels;
  if (data.size() < offset + samples * bytes_per_sample) {
    throw UserError(path + " is truncated: " + std::to_string(image.width) + "x" + std::to_string(image.height) + " needs " +
                    std::to_string(samples * bytes_per_sample) + " bytes of samples, it has " + std::to_string(data.size() - offset));
  }
  image.pixels.resize(samples);
  const auto* raster = reinterpret_cast<const unsigned char*>(data.data() + offset);
  for (std::size_t i = 0; i < samples; ++i) {
    const unsigned value = bytes_per_sample == 2 ? (raster[2 * i] << 8u) | raster[2 * i + 1] : raster[i];  // 16-bit: big-endian
    image.pixels[i] = std::min(1.0f, static_cast<float>(value) / static_cast<float>(maxval));
  }
  return image;
}

Image resize_bilinear(const Image& image, int width, int height) {
  if (width < 1 || height < 1) throw std::invalid_argument("resize to an empty image");
  const std::size_t channels = static_cast<std::size_t>(image.channels);
  const std::vector<Filter> columns = triangle_filters(image.width, width);
  const std::vector<Filter> rows = triangle_filters(image.height, height);
  // Horizontal pass into (source rows x new width), then vertical.
  std::vector<double> horizontal(static_cast<std::size_t>(image.height) * width * channels, 0.0);
  for (int y = 0; y < image.height; ++y) {
    for (int x = 0; x < width; ++x) {
      const Filter& filter = columns[static_cast<std::size_t>(x)];
      double* out = &horizontal[(static_cast<std::size_t>(y) * width + x) * channels];
      for (std::size_t k = 0; k < filter.weights.size(); ++k) {
        const float* in = &image.pixels[(static_cast<std::size_t>(y) * image.width + filter.first + k) * channels];
        for (std::size_t c = 0; c < channels; ++c) out[c] += filter.weights[k] * in[c];
      }
    }
  }
  Image resized{width, height, image.channels, std::vector<float>(static_cast<std::size_t>(width) * height * channels)};
  for (int y = 0; y < height; ++y) {
    const Filter& filter = rows[static_cast<std::size_t>(y)];
    for (int x = 0; x < width; ++x) {
      for (std::size_t c = 0; c < channels; ++c) {
        double value = 0.0;
        for (std::size_t k = 0; k < filter.weights.size(); ++k) {
          value += filter.weights[k] * horizontal[((filter.first + k) * width + x) * channels + c];
        }
        resized.pixels[(static_cast<std::size_t>(y) * width + x) * channels + c] = static_cast<float>(value);
      }
    }
  }
  return resized;
}

std::vector<float> image_to_nchw(const Image& image, const Shape& shape, ImageFit fit) {
  if (shape.size() != 4 || (shape[1] != 1 && shape[1] != 3) || shape[2] > kMaxSide || shape[3] > kMaxSide) {
    throw UserError("an image can feed only an NCHW input with 1 or 3 channels, not one of shape " + format_shape(shape) +
                    "; give a .npy or .bin file for this input instead");
  }
  const std::int64_t batch = shape[0];
  const int channels = static_cast<int>(shape[1]);
  const int height = static_cast<int>(shape[2]);
  const int width = static_cast<int>(shape[3]);
  int new_width = width, new_height = height, pad_x = 0, pad_y = 0;
  if (fit == ImageFit::letterbox) {
    const double ratio = std::min(static_cast<double>(width) / image.width, static_cast<double>(height) / image.height);
    new_width = std::max(1, round_half_even(image.width * ratio));
    new_height = std::max(1, round_half_even(image.height * ratio));
    pad_x = round_half_even((width - new_width) / 2.0);
    pad_y = round_half_even((height - new_height) / 2.0);
  }
  const Image resized = resize_bilinear(image, new_width, new_height);
  const std::size_t plane = static_cast<std::size_t>(height) * width;
  std::vector<float> tensor(static_cast<std::size_t>(batch) * channels * plane, kPadValue);
  for (int c = 0; c < channels; ++c) {
    float* out = &tensor[static_cast<std::size_t>(c) * plane];
    for (int y = 0; y < new_height; ++y) {
      for (int x = 0; x < new_width; ++x) {
        out[static_cast<std::size_t>(y + pad_y) * width + x + pad_x] =
            sample(resized, static_cast<std::size_t>(y) * new_width + x, channels, c);
      }
    }
  }
  const std::size_t item = static_cast<std::size_t>(channels) * plane;
  for (std::int64_t n = 1; n < batch; ++n) std::copy(tensor.begin(), tensor.begin() + item, tensor.begin() + n * item);
  return tensor;
}

}  // namespace ec

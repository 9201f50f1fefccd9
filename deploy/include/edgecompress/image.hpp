// Binary PPM/PGM reading and resizing into an NCHW float32 input, as edgecompress.data.letterbox prepares images.
#pragma once

#include <string>
#include <vector>

#include "edgecompress/shapes.hpp"

namespace ec {

/// Interleaved samples (height x width x channels) scaled to [0, 1].
struct Image {
  int width = 0;
  int height = 0;
  int channels = 0;  // 1 (PGM) or 3 (PPM, RGB)
  std::vector<float> pixels;
};

/// How an image is fitted to the input's H x W.
enum class ImageFit {
  letterbox,  // keep the aspect ratio, centre on grey (114/255) padding: edgecompress's and YOLO's inference layout
  stretch,    // resize to H x W, ignoring the aspect ratio
};

/// "letterbox" or "stretch"; UserError naming `option` otherwise.
ImageFit parse_image_fit(const std::string& option, const std::string& text);

/// Reads a binary PPM (P6) or PGM (P5) file, 8- or 16-bit, comments allowed in the header.
Image read_pnm(const std::string& path);

/// Resamples to width x height with a triangle (bilinear) filter that widens when shrinking, as PIL's
/// BILINEAR resize does, so a downscaled image is averaged rather than aliased.
Image resize_bilinear(const Image& image, int width, int height);

/// The image as an NCHW float32 tensor of `shape` (N, C, H, W with C 1 or 3): fitted per `fit`, grey
/// repeated to three channels or RGB reduced to luma (ITU-R 601) as needed, the same image in every batch item.
std::vector<float> image_to_nchw(const Image& image, const Shape& shape, ImageFit fit);

}  // namespace ec

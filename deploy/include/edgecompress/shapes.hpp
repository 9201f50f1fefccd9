// Tensor shapes as the command line writes them ("1x3x320x320") and their resolution against an engine's.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace ec {

using Shape = std::vector<std::int64_t>;

/// "1x3x320x320" -> {1, 3, 320, 320}; every dimension a positive integer, else UserError naming `option`.
Shape parse_shape(const std::string& option, const std::string& text);
/// {1, 3, -1, -1} -> "1x3x-1x-1".
std::string format_shape(const Shape& shape);
/// Product of the dimensions; UserError when a dimension is not positive or the product overflows.
std::int64_t element_count(const Shape& shape);

/// The shape to run input `name` with: the engine's own when it is static, else the one from --shapes
/// (which must have the engine's rank and agree with every fixed dimension). UserError with the fix otherwise.
Shape resolve_input_shape(const std::string& name, const Shape& engine_shape, const std::map<std::string, Shape>& requested);

/// UserError when a name given to `option` is not one of the engine's inputs (lists the inputs it has).
void check_input_names(const std::string& option, const std::vector<std::string>& given,
                       const std::vector<std::string>& engine_inputs);

}  // namespace ec

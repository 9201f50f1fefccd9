#include "edgecompress/shapes.hpp"

#include <algorithm>
#include <limits>

#include "edgecompress/errors.hpp"
#include "edgecompress/options.hpp"

namespace ec {

Shape parse_shape(const std::string& option, const std::string& text) {
  Shape shape;
  for (const std::string& piece : split(text, 'x')) {
    const bool digits = !piece.empty() && std::all_of(piece.begin(), piece.end(), [](char c) { return c >= '0' && c <= '9'; });
    if (!digits || piece.size() > 9 || std::stoll(piece) < 1) {
      throw UserError(option + ": '" + text + "' is not a shape; write positive dimensions joined by 'x', e.g. 1x3x320x320");
    }
    shape.push_back(std::stoll(piece));
  }
  return shape;
}

std::string format_shape(const Shape& shape) {
  std::string text;
  for (std::size_t i = 0; i < shape.size(); ++i) text += (i ? "x" : "") + std::to_string(shape[i]);
  return text.empty() ? "scalar" : text;
}

std::int64_t element_count(const Shape& shape) {
  std::int64_t count = 1;
  for (const std::int64_t dim : shape) {
    if (dim < 1) throw UserError("shape " + format_shape(shape) + " has a dimension below 1; give every dimension with --shapes");
    if (count > std::numeric_limits<std::int64_t>::max() / dim) throw UserError("shape " + format_shape(shape) + " is too large");
    count *= dim;
  }
  return count;
}

Shape resolve_input_shape(const std::string& name, const Shape& engine_shape, const std::map<std::string, Shape>& requested) {
  const bool dynamic = std::any_of(engine_shape.begin(), engine_shape.end(), [](std::int64_t dim) { return dim < 0; });
  const auto given = requested.find(name);
  if (given == requested.end()) {
    if (dynamic) {
      Shape example = engine_shape;
      std::replace_if(example.begin(), example.end(), [](std::int64_t dim) { return dim < 0; }, std::int64_t{1});
      throw UserError("input '" + name + "' has the dynamic shape " + format_shape(engine_shape) + ": give one with --shapes " + name +
                      ":" + format_shape(example) + " (any size the engine's optimization profile allows)");
    }
    return engine_shape;
  }
  const Shape& shape = given->second;
  bool agrees = shape.size() == engine_shape.size();
  for (std::size_t i = 0; agrees && i < shape.size(); ++i) agrees = engine_shape[i] < 0 || engine_shape[i] == shape[i];
  if (!agrees) {
    throw UserError("--shapes " + name + ":" + format_shape(shape) + " does not fit the engine's input shape " + format_shape(engine_shape) +
                    " (-1 marks the dimensions you may choose); give a shape of that form");
  }
  return shape;
}

void check_input_names(const std::string& option, const std::vector<std::string>& given, const std::vector<std::string>& engine_inputs) {
  for (const std::string& name : given) {
    if (std::find(engine_inputs.begin(), engine_inputs.end(), name) == engine_inputs.end()) {
      std::string names;
      for (const std::string& input : engine_inputs) names += (names.empty() ? "'" : ", '") + input + "'";
      throw UserError(option + " names '" + name + "', which is not an input of the engine; its inputs are " + names);
    }
  }
}

}  // namespace ec

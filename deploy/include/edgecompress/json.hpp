// A JSON value with ordered object keys, written with correct escaping and round-trip exact numbers.
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

namespace ec {

class Json {
 public:
  using Array = std::vector<Json>;
  using Object = std::vector<std::pair<std::string, Json>>;  // insertion order is kept

  Json() : value_(nullptr) {}
  Json(std::nullptr_t) : value_(nullptr) {}
  Json(bool value) : value_(value) {}
  template <typename T, std::enable_if_t<std::is_integral<T>::value && !std::is_same<T, bool>::value, int> = 0>
  Json(T value) : value_(to_int64(value)) {}
  template <typename T, std::enable_if_t<std::is_floating_point<T>::value, int> = 0>
  Json(T value) : value_(static_cast<double>(value)) {}
  Json(const char* value) : value_(std::string(value)) {}
  Json(std::string value) : value_(std::move(value)) {}
  Json(Array value) : value_(std::move(value)) {}
  Json(Object value) : value_(std::move(value)) {}

  /// null when `value` is empty, else the value.
  template <typename T>
  static Json optional(const std::optional<T>& value) {
    return value ? Json(*value) : Json();
  }

  bool is_null() const { return std::holds_alternative<std::nullptr_t>(value_); }
  bool is_bool() const { return std::holds_alternative<bool>(value_); }
  bool is_integer() const { return std::holds_alternative<std::int64_t>(value_); }
  bool is_number() const { return is_integer() || std::holds_alternative<double>(value_); }
  bool is_string() const { return std::holds_alternative<std::string>(value_); }
  bool is_array() const { return std::holds_alternative<Array>(value_); }
  bool is_object() const { return std::holds_alternative<Object>(value_); }

  bool as_bool() const { return std::get<bool>(value_); }
  std::int64_t as_integer() const { return std::get<std::int64_t>(value_); }
  double as_number() const;
  const std::string& as_string() const { return std::get<std::string>(value_); }
  const Array& as_array() const { return std::get<Array>(value_); }
  const Object& as_object() const { return std::get<Object>(value_); }

  /// The member `key` of an object; std::out_of_range when absent.
  const Json& at(const std::string& key) const;
  bool contains(const std::string& key) const;

  /// The JSON text, indented by `indent` spaces per level (0: one line). std::invalid_argument for a
  /// non-finite number, which JSON cannot hold.
  std::string dump(int indent = 2) const;

 private:
  template <typename T>
  static std::int64_t to_int64(T value) {
    if (std::is_unsigned<T>::value && static_cast<std::uint64_t>(value) > static_cast<std::uint64_t>(INT64_MAX)) {
      throw std::invalid_argument("integer too large for a JSON report");
    }
    return static_cast<std::int64_t>(value);
  }
  void write(std::string& out, int indent, int depth) const;

  std::variant<std::nullptr_t, bool, std::int64_t, double, std::string, Array, Object> value_;
};

/// `text` as a JSON string literal: quotes, backslash and control characters escaped; invalid UTF-8
/// bytes replaced by U+FFFD so the document stays valid UTF-8.
std::string json_quote(const std::string& text);

/// The shortest decimal text that reads back as exactly `value` (std::invalid_argument when not finite).
std::string json_number(double value);

}  // namespace ec

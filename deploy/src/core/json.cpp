#include "edgecompress/json.hpp"

#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace ec {

namespace {

/// Length of the valid UTF-8 sequence starting at text[at] (1..4), or 0 when the bytes there are not one.
std::size_t utf8_sequence_length(const std::string& text, std::size_t at) {
  const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(text[i]); };
  const unsigned char lead = byte(at);
  std::size_t length;
  std::uint32_t code;
  if (lead < 0x80) return 1;
  if (lead >= 0xC2 && lead <= 0xDF) {
    length = 2;
    code = lead & 0x1F;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    length = 3;
    code = lead & 0x0F;
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    length = 4;
    code = lead & 0x07;
  } else {
    return 0;
  }
  if (at + length > text.size()) return 0;
  for (std::size_t i = 1; i < length; ++i) {
    if ((byte(at + i) & 0xC0) != 0x80) return 0;
    code = (code << 6) | (byte(at + i) & 0x3F);
  }
  const bool overlong = (length == 3 && code < 0x800) || (length == 4 && code < 0x10000);
  const bool surrogate = code >= 0xD800 && code <= 0xDFFF;
  return overlong || surrogate || code > 0x10FFFF ? 0 : length;
}

void newline(std::string& out, int indent, int depth) {
  if (indent <= 0) return;
  out += '\n';
  out.append(static_cast<std::size_t>(indent * depth), ' ');
}

}  // namespace

std::string json_quote(const std::string& text) {
  static const char* const kHex = "0123456789abcdef";
  std::string out = "\"";
  for (std::size_t at = 0; at < text.size();) {
    const unsigned char c = static_cast<unsigned char>(text[at]);
    const std::size_t length = utf8_sequence_length(text, at);
    if (length == 0) {
      out += "\xEF\xBF\xBD";  // U+FFFD REPLACEMENT CHARACTER for a byte that is not UTF-8
      ++at;
      continue;
    }
    if (length > 1) {
      out.append(text, at, length);
      at += length;
      continue;
    }
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          out += "\\u00";
          out += kHex[c >> 4];
          out += kHex[c & 0xF];
        } else {
          out += static_cast<char>(c);
        }
    }
    ++at;
  }
  return out + "\"";
}

std::string json_number(double value) {
  if (!std::isfinite(value)) throw std::invalid_argument("a JSON report cannot hold the non-finite number " + std::to_string(value));
  char buffer[32];
  for (int precision = 15; precision <= 17; ++precision) {
    std::snprintf(buffer, sizeof buffer, "%.*g", precision, value);
    if (std::strtod(buffer, nullptr) == value) break;
  }
  return buffer;
}

double Json::as_number() const { return is_integer() ? static_cast<double>(as_integer()) : std::get<double>(value_); }

const Json& Json::at(const std::string& key) const {
  for (const auto& member : as_object()) {
    if (member.first == key) return member.second;
  }
  throw std::out_of_range("no member '" + key + "' in the JSON object");
}

bool Json::contains(const std::string& key) const {
  if (!is_object()) return false;
  for (const auto& member : as_object()) {
    if (member.first == key) return true;
  }
  return false;
}

std::string Json::dump(int indent) const {
  std::string out;
  write(out, indent, 0);
  return out;
}

void Json::write(std::string& out, int indent, int depth) const {
  if (is_null()) {
    out += "null";
  } else if (is_bool()) {
    out += as_bool() ? "true" : "false";
  } else if (is_integer()) {
    out += std::to_string(as_integer());
  } else if (is_number()) {
    out += json_number(std::get<double>(value_));
  } else if (is_string()) {
    out += json_quote(as_string());
  } else if (is_array()) {
    const Array& items = as_array();
    // Arrays of plain values (shapes, times) stay on one line; arrays of objects get one per line.
    const bool nested = !items.empty() && (items.front().is_object() || items.front().is_array());
    out += '[';
    for (std::size_t i = 0; i < items.size(); ++i) {
      if (i) out += nested || indent <= 0 ? "," : ", ";
      if (nested) newline(out, indent, depth + 1);
      items[i].write(out, indent, depth + 1);
    }
    if (nested) newline(out, indent, depth);
    out += ']';
  } else {
    const Object& members = as_object();
    out += '{';
    for (std::size_t i = 0; i < members.size(); ++i) {
      if (i) out += ',';
      newline(out, indent, depth + 1);
      out += json_quote(members[i].first);
      out += indent > 0 ? ": " : ":";
      members[i].second.write(out, indent, depth + 1);
    }
    if (!members.empty()) newline(out, indent, depth);
    out += '}';
  }
}

}  // namespace ec

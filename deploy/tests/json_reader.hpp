// A strict JSON reader for the tests, so they read the report back instead of matching text.
#pragma once

#include <cstdlib>
#include <stdexcept>
#include <string>

#include "edgecompress/json.hpp"

namespace ec_test {

class JsonReader {
 public:
  explicit JsonReader(const std::string& text) : text_(text) {}

  ec::Json document() {
    ec::Json value = read_value();
    skip_space();
    if (at_ != text_.size()) fail("text after the JSON value");
    return value;
  }

 private:
  [[noreturn]] void fail(const std::string& what) const { throw std::runtime_error("bad JSON at " + std::to_string(at_) + ": " + what); }

  void skip_space() {
    while (at_ < text_.size() && (text_[at_] == ' ' || text_[at_] == '\n' || text_[at_] == '\r' || text_[at_] == '\t')) ++at_;
  }

  bool consume(const std::string& word) {
    if (text_.compare(at_, word.size(), word) != 0) return false;
    at_ += word.size();
    return true;
  }

  ec::Json read_value() {
    skip_space();
    if (at_ >= text_.size()) fail("unexpected end");
    const char c = text_[at_];
    if (c == '{') return read_object();
    if (c == '[') return read_array();
    if (c == '"') return read_string();
    if (consume("true")) return true;
    if (consume("false")) return false;
    if (consume("null")) return nullptr;
    return read_number();
  }

  ec::Json read_object() {
    ec::Json::Object members;
    ++at_;
    skip_space();
    if (consume("}")) return members;
    for (;;) {
      skip_space();
      if (at_ >= text_.size() || text_[at_] != '"') fail("expected a key");
      std::string key = read_string().as_string();
      skip_space();
      if (!consume(":")) fail("expected ':'");
      members.emplace_back(std::move(key), read_value());
      skip_space();
      if (consume("}")) return members;
      if (!consume(",")) fail("expected ',' or '}'");
    }
  }

  ec::Json read_array() {
    ec::Json::Array items;
    ++at_;
    skip_space();
    if (consume("]")) return items;
    for (;;) {
      items.push_back(read_value());
      skip_space();
      if (consume("]")) return items;
      if (!consume(",")) fail("expected ',' or ']'");
    }
  }

  unsigned read_hex4() {
    if (at_ + 4 > text_.size()) fail("short \\u escape");
    const std::string digits = text_.substr(at_, 4);
    char* end = nullptr;
    const unsigned long value = std::strtoul(digits.c_str(), &end, 16);
    if (end != digits.c_str() + 4) fail("bad \\u escape");
    at_ += 4;
    return static_cast<unsigned>(value);
  }

  static void append_utf8(std::string& out, unsigned code) {
    if (code < 0x80) {
      out += static_cast<char>(code);
    } else if (code < 0x800) {
      out += static_cast<char>(0xC0 | (code >> 6));
      out += static_cast<char>(0x80 | (code & 0x3F));
    } else if (code < 0x10000) {
      out += static_cast<char>(0xE0 | (code >> 12));
      out += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (code & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (code >> 18));
      out += static_cast<char>(0x80 | ((code >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (code & 0x3F));
    }
  }

  ec::Json read_string() {
    std::string out;
    ++at_;
    while (at_ < text_.size() && text_[at_] != '"') {
      const unsigned char c = static_cast<unsigned char>(text_[at_++]);
      if (c < 0x20) fail("raw control character in a string");
      if (c != '\\') {
        out += static_cast<char>(c);
        continue;
      }
      if (at_ >= text_.size()) fail("unfinished escape");
      const char escape = text_[at_++];
      switch (escape) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          unsigned code = read_hex4();
          if (code >= 0xD800 && code <= 0xDBFF) {
            if (!consume("\\u")) fail("lone high surrogate");
            code = 0x10000 + ((code - 0xD800) << 10) + (read_hex4() - 0xDC00);
          }
          append_utf8(out, code);
          break;
        }
        default: fail("unknown escape");
      }
    }
    if (!consume("\"")) fail("unterminated string");
    return out;
  }

  ec::Json read_number() {
    const std::size_t start = at_;
    if (at_ < text_.size() && text_[at_] == '-') ++at_;
    bool fractional = false;
    while (at_ < text_.size()) {
      const char c = text_[at_];
      if (c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-') {
        fractional = true;
      } else if (c < '0' || c > '9') {
        break;
      }
      ++at_;
    }
    const std::string number = text_.substr(start, at_ - start);
    if (number.empty() || number == "-") fail("expected a value");
    if (number.size() > 1 && number[number[0] == '-' ? 1 : 0] == '0' && std::isdigit(static_cast<unsigned char>(number[number[0] == '-' ? 2 : 1]))) {
      fail("leading zero");
    }
    char* end = nullptr;
    if (!fractional) return static_cast<std::int64_t>(std::strtoll(number.c_str(), &end, 10));
    const double value = std::strtod(number.c_str(), &end);
    if (end != number.c_str() + number.size()) fail("bad number " + number);
    return value;
  }

  const std::string& text_;
  std::size_t at_ = 0;
};

inline ec::Json parse_json(const std::string& text) { return JsonReader(text).document(); }

}  // namespace ec_test

#include "edgecompress/options.hpp"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <sstream>

#include "edgecompress/errors.hpp"

namespace ec {

namespace {

constexpr const char* kHelpName = "--help";

/// Levenshtein distance, for "did you mean" suggestions.
std::size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

std::string example(const std::string& option, const std::string& value) { return " (e.g. " + option + " " + value + ")"; }

}  // namespace

OptionParser::OptionParser(std::string program, std::string usage, std::string description)
    : program_(std::move(program)), usage_(std::move(usage)), description_(std::move(description)) {}

OptionParser& OptionParser::flag(const std::string& name, const std::string& help, std::function<void()> on_set) {
  entries_.push_back({name, "", help, [on_set](const std::string&) { on_set(); }});
  return *this;
}

OptionParser& OptionParser::option(const std::string& name, const std::string& metavar, const std::string& help,
                                   std::function<void(const std::string&)> on_value) {
  entries_.push_back({name, metavar, help, std::move(on_value)});
  return *this;
}

const OptionParser::Entry* OptionParser::find(const std::string& name) const {
  for (const Entry& entry : entries_) {
    if (entry.name == name) return &entry;
  }
  return nullptr;
}

std::string OptionParser::closest_name(const std::string& unknown) const {
  std::string best;
  std::size_t best_distance = 4;  // suggest only near misses
  for (const Entry& entry : entries_) {
    const std::size_t distance = edit_distance(unknown, entry.name);
    if (distance < best_distance) {
      best = entry.name;
      best_distance = distance;
    }
  }
  return best;
}

bool OptionParser::parse(const std::vector<std::string>& args) const {
  if (std::find(args.begin(), args.end(), kHelpName) != args.end() ||
      std::find(args.begin(), args.end(), "-h") != args.end()) {
    return false;
  }
  for (std::size_t index = 0; index < args.size(); ++index) {
    const std::string& arg = args[index];
    if (arg.rfind("--", 0) != 0) {
      throw UserError("unexpected argument '" + arg + "': every argument is an option such as --engine PATH (see --help)");
    }
    const std::size_t equals = arg.find('=');
    const std::string name = arg.substr(0, equals);
    const Entry* entry = find(name);
    if (entry == nullptr) {
      const std::string suggestion = closest_name(name);
      throw UserError("unknown option '" + name + "'" + (suggestion.empty() ? "" : "; did you mean " + suggestion + "?") +
                      " (see --help)");
    }
    if (entry->metavar.empty()) {
      if (equals != std::string::npos) {
        throw UserError(name + " takes no value: write " + name + " alone");
      }
      entry->handler("");
      continue;
    }
    std::string value;
    if (equals != std::string::npos) {
      value = arg.substr(equals + 1);
    } else if (index + 1 < args.size() && find(split(args[index + 1], '=')[0]) == nullptr) {
      value = args[++index];
    } else {
      throw UserError(name + " needs a value: " + name + " " + entry->metavar);
    }
    entry->handler(value);
  }
  return true;
}

std::string OptionParser::help_text() const {
  std::ostringstream out;
  out << "usage: " << program_ << " " << usage_ << "\n\n" << description_ << "\n\noptions:\n";
  std::vector<std::pair<std::string, std::string>> rows;
  for (const Entry& entry : entries_) rows.emplace_back(entry.name + (entry.metavar.empty() ? "" : " " + entry.metavar), entry.help);
  rows.emplace_back("-h, --help", "show this help and exit");
  std::size_t width = 0;
  for (const auto& row : rows) width = std::max(width, row.first.size());
  for (const auto& row : rows) {
    out << "  " << row.first << std::string(width - row.first.size() + 2, ' ') << row.second << "\n";
  }
  return out.str();
}

std::int64_t parse_integer(const std::string& option, const std::string& text, std::int64_t minimum, std::int64_t maximum) {
  const std::string expected = "expected an integer >= " + std::to_string(minimum);
  errno = 0;
  char* end = nullptr;
  const long long value = text.empty() ? 0 : std::strtoll(text.c_str(), &end, 10);
  if (text.empty() || end != text.c_str() + text.size() || errno == ERANGE || std::isspace(static_cast<unsigned char>(text[0]))) {
    throw UserError(option + ": " + expected + ", got '" + text + "'" + example(option, std::to_string(std::max<std::int64_t>(minimum, 10))));
  }
  if (value < minimum || value > maximum) {
    throw UserError(option + ": " + expected + (maximum == INT64_MAX ? "" : " and <= " + std::to_string(maximum)) + ", got " + text);
  }
  return value;
}

std::uint64_t parse_unsigned(const std::string& option, const std::string& text) {
  errno = 0;
  char* end = nullptr;
  const bool digits = !text.empty() && std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
  const unsigned long long value = digits ? std::strtoull(text.c_str(), &end, 10) : 0;
  if (!digits || errno == ERANGE) {
    throw UserError(option + ": expected an integer from 0 to 18446744073709551615, got '" + text + "'" + example(option, "0"));
  }
  return value;
}

double parse_number(const std::string& option, const std::string& text, double minimum) {
  errno = 0;
  char* end = nullptr;
  const double value = text.empty() ? 0.0 : std::strtod(text.c_str(), &end);
  const bool parsed = !text.empty() && end == text.c_str() + text.size() && errno != ERANGE && std::isfinite(value) &&
                      !std::isspace(static_cast<unsigned char>(text[0]));
  if (!parsed || value < minimum) {
    std::ostringstream bound;
    bound << minimum;
    throw UserError(option + ": expected a number >= " + bound.str() + ", got '" + text + "'" + example(option, "5"));
  }
  return value;
}

std::vector<std::string> split(const std::string& text, char separator) {
  std::vector<std::string> pieces;
  std::size_t start = 0;
  for (std::size_t at = text.find(separator); at != std::string::npos; at = text.find(separator, start)) {
    pieces.push_back(text.substr(start, at - start));
    start = at + 1;
  }
  pieces.push_back(text.substr(start));
  return pieces;
}

}  // namespace ec

// A small command-line parser: options are registered with a handler each (no if-chain over names).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace ec {

/// GNU-style long options ("--name VALUE", "--name=VALUE", "--flag"); --help/-h is built in.
/// Every problem is a UserError naming the option and how to fix it.
class OptionParser {
 public:
  OptionParser(std::string program, std::string usage, std::string description);

  /// An option without a value; `on_set` runs when it is given.
  OptionParser& flag(const std::string& name, const std::string& help, std::function<void()> on_set);
  /// An option with a value; `on_value` runs once per occurrence and may throw UserError.
  OptionParser& option(const std::string& name, const std::string& metavar, const std::string& help,
                       std::function<void(const std::string&)> on_value);

  /// Parses `args` (without the program name). Returns false when --help was given: the caller prints
  /// help_text() and exits 0 without checking required options.
  bool parse(const std::vector<std::string>& args) const;

  std::string help_text() const;

 private:
  struct Entry {
    std::string name;
    std::string metavar;  // empty for a flag
    std::string help;
    std::function<void(const std::string&)> handler;
  };
  const Entry* find(const std::string& name) const;
  std::string closest_name(const std::string& unknown) const;

  std::string program_;
  std::string usage_;
  std::string description_;
  std::vector<Entry> entries_;
};

/// "--warmup: expected an integer >= 0, got 'x' (e.g. --warmup 10)" unless `text` is an integer in [minimum, maximum].
std::int64_t parse_integer(const std::string& option, const std::string& text, std::int64_t minimum,
                           std::int64_t maximum = INT64_MAX);
/// Same for an unsigned 64-bit value (seeds).
std::uint64_t parse_unsigned(const std::string& option, const std::string& text);
/// A finite decimal number >= `minimum`.
double parse_number(const std::string& option, const std::string& text, double minimum);

/// `text` split at every `separator` (empty pieces kept).
std::vector<std::string> split(const std::string& text, char separator);

}  // namespace ec

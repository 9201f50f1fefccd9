// File checks with messages that say what to do, and atomic writes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace ec {

/// UserError unless `path` is an existing, non-empty, readable regular file. `what` names it in the message
/// ("engine file", "input file for 'images'") and `fix` says what to do about it.
void check_readable_file(const std::string& path, const std::string& what, const std::string& fix);

/// check_readable_file for a serialized TensorRT engine.
void check_engine_file(const std::string& path);

/// UserError unless the folder `path` would be written into exists and is writable.
void check_output_path(const std::string& path, const std::string& option);

std::uint64_t file_size(const std::string& path);

/// The whole file; UserError naming `path` when it cannot be read.
std::vector<char> read_file(const std::string& path);

/// Writes `data` to a temporary file beside `path`, flushes it to disk, then renames it over `path`,
/// so a reader never sees a half-written file. UserError naming `path` on failure.
void write_file_atomically(const std::string& path, const std::string& data);

/// The extension of `path` in lower case with its dot (".ppm"), or "" when it has none.
std::string lower_extension(const std::string& path);

}  // namespace ec

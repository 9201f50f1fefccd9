#include "edgecompress/files.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>

#include "edgecompress/errors.hpp"

namespace ec {

namespace {

std::string parent_folder(const std::string& path) {
  const std::size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

std::string reason() { return std::strerror(errno); }

/// The process's umask (read by setting and restoring it), so a new file gets the usual permissions.
mode_t current_umask() {
  const mode_t mask = ::umask(0);
  ::umask(mask);
  return mask;
}

}  // namespace

void check_readable_file(const std::string& path, const std::string& what, const std::string& fix) {
  struct stat info {};
  if (path.empty()) throw UserError(what + ": no path given; " + fix);
  if (::stat(path.c_str(), &info) != 0) throw UserError(what + " not found: " + path + " (" + reason() + "); " + fix);
  if (S_ISDIR(info.st_mode)) throw UserError(what + " " + path + " is a folder, not a file; " + fix);
  if (!S_ISREG(info.st_mode)) throw UserError(what + " " + path + " is not a regular file; " + fix);
  if (info.st_size == 0) throw UserError(what + " " + path + " is empty (an interrupted build or copy?); " + fix);
  std::ifstream stream(path, std::ios::binary);
  if (!stream || ::access(path.c_str(), R_OK) != 0) {
    throw UserError(what + " " + path + " cannot be read (" + reason() + "); check its permissions (chmod +r)");
  }
}

void check_engine_file(const std::string& path) {
  check_readable_file(path, "engine file", "build the engine on this device (build_engine.sh) and pass it with --engine PATH");
}

void check_output_path(const std::string& path, const std::string& option) {
  const std::string folder = parent_folder(path);
  struct stat info {};
  if (::stat(folder.c_str(), &info) != 0 || !S_ISDIR(info.st_mode)) {
    throw UserError(option + " " + path + ": the folder " + folder + " does not exist; create it first (mkdir -p " + folder + ")");
  }
  if (::stat(path.c_str(), &info) == 0 && S_ISDIR(info.st_mode)) {
    throw UserError(option + " " + path + " is a folder; give a file name such as " + path + "/latency.json");
  }
  if (::access(folder.c_str(), W_OK) != 0) {
    throw UserError(option + " " + path + ": the folder " + folder + " is not writable; choose another path");
  }
}

std::uint64_t file_size(const std::string& path) {
  struct stat info {};
  if (::stat(path.c_str(), &info) != 0) throw UserError("cannot read " + path + " (" + reason() + ")");
  return static_cast<std::uint64_t>(info.st_size);
}

std::vector<char> read_file(const std::string& path) {
  std::ifstream stream(path, std::ios::binary);
  if (!stream) throw UserError("cannot open " + path + " (" + reason() + "); check the path and its permissions");
  std::vector<char> data((std::istreambuf_iterator<char>(stream)), std::istreambuf_iterator<char>());
  if (stream.bad()) throw UserError("cannot read " + path + "; check the file and the disk");
  return data;
}

void write_file_atomically(const std::string& path, const std::string& data) {
  std::string temporary = path + ".tmp.XXXXXX";
  const int descriptor = ::mkstemp(&temporary[0]);
  if (descriptor < 0) {
    throw UserError("cannot write " + path + " (" + reason() + "); check that its folder exists and is writable");
  }
  std::size_t written = 0;
  bool ok = true;
  while (ok && written < data.size()) {
    const ssize_t count = ::write(descriptor, data.data() + written, data.size() - written);
    if (count < 0 && errno == EINTR) continue;
    ok = count > 0;
    if (ok) written += static_cast<std::size_t>(count);
  }
  ok = ok && ::fchmod(descriptor, 0666 & ~current_umask()) == 0 && ::fsync(descriptor) == 0;
  const std::string error = ok ? "" : reason();
  ok = (::close(descriptor) == 0) && ok;
  if (ok && ::rename(temporary.c_str(), path.c_str()) == 0) return;
  const std::string detail = error.empty() ? reason() : error;
  ::unlink(temporary.c_str());
  throw UserError("cannot write " + path + " (" + detail + "); check the disk space and the folder's permissions");
}

std::string lower_extension(const std::string& path) {
  const std::size_t slash = path.find_last_of('/');
  const std::size_t dot = path.find_last_of('.');
  if (dot == std::string::npos || (slash != std::string::npos && dot < slash)) return "";
  std::string extension = path.substr(dot);
  std::transform(extension.begin(), extension.end(), extension.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return extension;
}

}  // namespace ec

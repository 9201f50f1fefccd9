// File checks say what is wrong with the engine or output path, and how to fix it.
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.hpp"
#include "edgecompress/errors.hpp"
#include "edgecompress/files.hpp"

using ec::UserError;

EC_TEST(engine_file_checks) {
  ec_test::TempDir folder;
  const std::string engine = folder.file("model.engine");
  EC_CHECK_THROWS(ec::check_engine_file(engine), UserError, "engine file not found: " + engine);
  EC_CHECK_THROWS(ec::check_engine_file(engine), UserError, "build the engine on this device (build_engine.sh)");
  EC_CHECK_THROWS(ec::check_engine_file(folder.path()), UserError, "is a folder, not a file");
  ec_test::write_bytes(engine, "");
  EC_CHECK_THROWS(ec::check_engine_file(engine), UserError, "is empty");
  ec_test::write_bytes(engine, "serialized engine bytes");
  ec::check_engine_file(engine);
  EC_CHECK_EQ(ec::file_size(engine), 23u);
  if (::geteuid() != 0) {  // root reads files whatever their permissions
    ::chmod(engine.c_str(), 0);
    EC_CHECK_THROWS(ec::check_engine_file(engine), UserError, "cannot be read");
    ::chmod(engine.c_str(), 0644);
  }
}

EC_TEST(output_path_checks) {
  ec_test::TempDir folder;
  ec::check_output_path(folder.file("latency.json"), "--json");
  EC_CHECK_THROWS(ec::check_output_path(folder.file("nope/latency.json"), "--json"), UserError,
                  "the folder " + folder.file("nope") + " does not exist; create it first");
  EC_CHECK_THROWS(ec::check_output_path(folder.path(), "--json"), UserError, "is a folder; give a file name");
}

EC_TEST(atomic_write_replaces_and_leaves_no_temporary) {
  ec_test::TempDir folder;
  const std::string path = folder.file("out.txt");
  ec::write_file_atomically(path, "first");
  ec::write_file_atomically(path, "second, longer");
  const std::vector<char> data = ec::read_file(path);
  EC_CHECK_EQ(std::string(data.begin(), data.end()), "second, longer");
  struct stat info {};
  EC_CHECK(::stat(path.c_str(), &info) == 0 && (info.st_mode & 0777) != 0600);  // the umask's usual mode, not mkstemp's
  std::vector<std::string> names;
  DIR* listing = ::opendir(folder.path().c_str());
  for (const dirent* entry = ::readdir(listing); entry != nullptr; entry = ::readdir(listing)) {
    if (std::string(entry->d_name) != "." && std::string(entry->d_name) != "..") names.push_back(entry->d_name);
  }
  ::closedir(listing);
  EC_CHECK(names == std::vector<std::string>{"out.txt"});
}

EC_TEST(extensions) {
  EC_CHECK_EQ(ec::lower_extension("a/b/Image.PPM"), ".ppm");
  EC_CHECK_EQ(ec::lower_extension("a.b/noext"), "");
  EC_CHECK_EQ(ec::lower_extension("x.tar.NPY"), ".npy");
}

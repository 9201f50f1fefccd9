#include <ftw.h>
#include <stdlib.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <stdexcept>

#include "check.hpp"

namespace ec_test {

namespace {
int failures = 0;

int remove_entry(const char* path, const struct stat*, int, struct FTW*) { return std::remove(path); }
}  // namespace

std::vector<TestCase>& registry() {
  static std::vector<TestCase> cases;
  return cases;
}

void record_failure(const char* file, int line, const std::string& message) {
  ++failures;
  std::cerr << file << ":" << line << ": " << message << "\n";
}

TempDir::TempDir() {
  const char* base = std::getenv("TMPDIR");
  std::string pattern = std::string(base && *base ? base : "/tmp") + "/ec-test-XXXXXX";
  if (::mkdtemp(&pattern[0]) == nullptr) throw std::runtime_error("cannot create a temporary folder");
  path_ = pattern;
}

TempDir::~TempDir() { ::nftw(path_.c_str(), remove_entry, 16, FTW_DEPTH | FTW_PHYS); }

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream stream(path, std::ios::binary);
  stream.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!stream) throw std::runtime_error("cannot write test file " + path);
}

}  // namespace ec_test

int main() {
  int failed_cases = 0;
  for (const ec_test::TestCase& test : ec_test::registry()) {
    const int before = ec_test::failures;
    try {
      test.body();
    } catch (const std::exception& error) {
      ec_test::record_failure(test.name, 0, std::string("unexpected exception: ") + error.what());
    }
    const bool passed = ec_test::failures == before;
    failed_cases += passed ? 0 : 1;
    std::cout << (passed ? "[pass] " : "[FAIL] ") << test.name << "\n";
  }
  std::cout << ec_test::registry().size() - failed_cases << " of " << ec_test::registry().size() << " cases passed\n";
  return failed_cases == 0 ? 0 : 1;
}

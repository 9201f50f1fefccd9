// Tiny test helpers for the core's test programs (no third-party framework): EC_TEST registers a case,
// EC_CHECK* record failures without stopping the case, main() (test_main.cpp) runs every case.
#pragma once

#include <cmath>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

namespace ec_test {

struct TestCase {
  const char* name;
  std::function<void()> body;
};

std::vector<TestCase>& registry();
void record_failure(const char* file, int line, const std::string& message);

struct Registration {
  Registration(const char* name, std::function<void()> body) { registry().push_back({name, std::move(body)}); }
};

template <typename A, typename B>
void check_equal(const A& actual, const B& expected, const char* actual_text, const char* expected_text, const char* file, int line) {
  if (actual == expected) return;
  std::ostringstream message;
  message << actual_text << " == " << expected_text << " failed: got " << actual << ", expected " << expected;
  record_failure(file, line, message.str());
}

/// A temporary folder, removed with everything in it when the object goes away.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  /// `name` inside the folder.
  std::string file(const std::string& name) const { return path_ + "/" + name; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

/// Writes `bytes` to `path` (plain write: test fixtures only).
void write_bytes(const std::string& path, const std::string& bytes);

}  // namespace ec_test

#define EC_TEST_CONCAT2(a, b) a##b
#define EC_TEST_CONCAT(a, b) EC_TEST_CONCAT2(a, b)
#define EC_TEST(name)                                                                            \
  static void name();                                                                            \
  static const ec_test::Registration EC_TEST_CONCAT(registration_, name)(#name, name);          \
  static void name()

#define EC_CHECK(condition) \
  ((condition) ? (void)0 : ec_test::record_failure(__FILE__, __LINE__, "EC_CHECK(" #condition ") failed"))
#define EC_CHECK_EQ(actual, expected) ec_test::check_equal((actual), (expected), #actual, #expected, __FILE__, __LINE__)
#define EC_CHECK_NEAR(actual, expected, tolerance)                                                                  \
  do {                                                                                                              \
    const double ec_actual = (actual), ec_expected = (expected);                                                    \
    if (!(std::fabs(ec_actual - ec_expected) <= (tolerance))) {                                                     \
      std::ostringstream ec_message;                                                                                \
      ec_message.precision(17);                                                                                     \
      ec_message << #actual " ~= " #expected " failed: got " << ec_actual << ", expected " << ec_expected;          \
      ec_test::record_failure(__FILE__, __LINE__, ec_message.str());                                               \
    }                                                                                                               \
  } while (0)
/// `statement` must throw `type` whose what() contains `fragment`.
#define EC_CHECK_THROWS(statement, type, fragment)                                                                  \
  do {                                                                                                              \
    bool ec_thrown = false;                                                                                         \
    try {                                                                                                           \
      statement;                                                                                                    \
    } catch (const type& ec_error) {                                                                                \
      ec_thrown = true;                                                                                             \
      if (std::string(ec_error.what()).find(fragment) == std::string::npos) {                                      \
        ec_test::record_failure(__FILE__, __LINE__,                                                                 \
                                std::string(#statement " threw \"") + ec_error.what() + "\", without \"" + (fragment) + "\""); \
      }                                                                                                             \
    }                                                                                                               \
    if (!ec_thrown) ec_test::record_failure(__FILE__, __LINE__, #statement " did not throw " #type);                \
  } while (0)

// The one exception type for problems a user can fix, and the main() wrapper that turns it into exit status 2.
#pragma once

#include <functional>
#include <stdexcept>
#include <string>

namespace ec {

/// A user-fixable problem (bad argument, missing or malformed file). The message is one line: what is
/// wrong and how to fix it. Programs print it without more and exit with kUserErrorStatus.
class UserError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

constexpr int kUserErrorStatus = 2;   // same as the edgecompress CLI
constexpr int kFailureStatus = 1;     // anything else that went wrong (CUDA, TensorRT, I/O)

/// Runs `body` and returns its exit status; a UserError prints "program: error: message" and gives 2,
/// any other exception prints "program: failed: message" and gives 1.
int run_main(const std::string& program, const std::function<int()>& body);

}  // namespace ec

#include "edgecompress/errors.hpp"

#include <iostream>

namespace ec {

int run_main(const std::string& program, const std::function<int()>& body) {
  try {
    return body();
  } catch (const UserError& error) {
    std::cerr << program << ": error: " << error.what() << "\n";
    return kUserErrorStatus;
  } catch (const std::exception& error) {
    std::cerr << program << ": failed: " << error.what() << "\n";
    return kFailureStatus;
  }
}

}  // namespace ec

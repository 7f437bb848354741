// Internal error type: thrown inside libtgir, turned into a tgir_status + message at the C boundary.
#pragma once

#include <stdexcept>
#include <string>

#include "tgir.h"

namespace tgir {

/// An error with the status the C API returns for it; `what()` is the message for tgir_last_error().
class Error : public std::runtime_error {
 public:
  Error(tgir_status status, const std::string& message) : std::runtime_error(message), status_(status) {}
  tgir_status status() const noexcept { return status_; }

 private:
  tgir_status status_;
};

[[noreturn]] inline void fail(tgir_status status, const std::string& message) { throw Error(status, message); }

}  // namespace tgir

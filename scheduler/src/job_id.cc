#include "job_id.h"

#include <sys/random.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <random>

#include "absl/strings/escaping.h"

namespace hxemu::scheduler::internal {

std::string NewJobId() {
  std::string bytes(16, '\0');
  size_t filled = 0;
  while (filled < bytes.size()) {
    const ssize_t n =
        getrandom(bytes.data() + filled, bytes.size() - filled, /*flags=*/0);
    if (n > 0) {
      filled += static_cast<size_t>(n);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else {
      break;  // no getrandom (old kernel, seccomp): fall back below
    }
  }
  if (filled < bytes.size()) {
    std::random_device urandom("/dev/urandom");
    for (; filled < bytes.size(); ++filled) {
      bytes[filled] = static_cast<char>(urandom() & 0xff);
    }
  }
  return absl::BytesToHexString(bytes);
}

}  // namespace hxemu::scheduler::internal

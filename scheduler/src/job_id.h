// File: job_id.h (internal to hxemu_scheduler)
//
// Job ids double as capabilities: whoever knows one may query or cancel the
// job. They are therefore drawn from the operating system's CSPRNG
// (getrandom(2)), not from a seeded pseudo-random generator, so they cannot
// be guessed from other ids.
#pragma once

#include <string>

namespace hxemu::scheduler::internal {

// Returns 128 random bits as 32 lowercase hex digits. Thread-safe; ~0.3 us.
//
// (Not std::random_device(): libstdc++'s default token uses RDSEED, measured
// at ~23 us per 32 bits on our machines.)
std::string NewJobId();

}  // namespace hxemu::scheduler::internal

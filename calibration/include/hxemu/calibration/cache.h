// File: hxemu/calibration/cache.h
//
// On-disk cache of calibrations, keyed by chip id + targets (resolved, every
// field set) + emulator version, like calix's calib_cache (sha256 of target,
// options, setup and software state). One file per calibration,
// <dir>/chip<id>-<key>.calib.pb (binary hxemu.v1.Calibration), written
// atomically (temporary file + rename). Thread safe: no state besides the
// directory name.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "hxemu/v1/calibration.pb.h"

namespace hxemu::calibration {

class CalibrationCache {
 public:
  // `dir` empty: the cache stores nothing and finds nothing.
  explicit CalibrationCache(std::string dir) : dir_(std::move(dir)) {}

  // 32 hex digits identifying (chip id, resolved targets, emulator version).
  static std::string Key(uint32_t chip_id,
                         const hxemu::v1::CalibrationTargets& resolved,
                         absl::string_view emulator_version);

  // File of that key ("" without a directory).
  std::string PathFor(uint32_t chip_id,
                      const hxemu::v1::CalibrationTargets& resolved,
                      absl::string_view emulator_version) const;

  // The cached calibration, if a readable file with exactly this chip, these
  // targets and this version exists.
  std::optional<hxemu::v1::Calibration> Load(
      uint32_t chip_id, const hxemu::v1::CalibrationTargets& resolved,
      absl::string_view emulator_version) const;

  // Stores `calibration` under its own chip id, targets and version.
  // UNAVAILABLE if the directory cannot be created or written.
  absl::Status Store(const hxemu::v1::Calibration& calibration) const;

  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
};

}  // namespace hxemu::calibration

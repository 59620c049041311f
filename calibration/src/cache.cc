// File: cache.cc
#include "hxemu/calibration/cache.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"

namespace hxemu::calibration {
namespace {

// Deterministic bytes of a message (field order, no map reordering).
std::string Deterministic(const google::protobuf::MessageLite& m) {
  std::string out;
  google::protobuf::io::StringOutputStream stream(&out);
  google::protobuf::io::CodedOutputStream coded(&stream);
  coded.SetSerializationDeterministic(true);
  m.SerializeToCodedStream(&coded);
  coded.Trim();
  return out;
}

// FNV-1a, 64 bit, from a given offset basis.
uint64_t Fnv1a(absl::string_view bytes, uint64_t basis) {
  uint64_t h = basis;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 0x100000001B3ull;
  }
  return h;
}

}  // namespace

std::string CalibrationCache::Key(uint32_t chip_id,
                                  const hxemu::v1::CalibrationTargets& resolved,
                                  absl::string_view emulator_version) {
  const std::string bytes = absl::StrCat(chip_id, "|", emulator_version, "|",
                                         Deterministic(resolved));
  return absl::StrFormat("%016x%016x", Fnv1a(bytes, 0xCBF29CE484222325ull),
                         Fnv1a(bytes, 0x84222325CBF29CE4ull));
}

std::string CalibrationCache::PathFor(
    uint32_t chip_id, const hxemu::v1::CalibrationTargets& resolved,
    absl::string_view emulator_version) const {
  if (dir_.empty()) return "";
  return absl::StrCat(dir_, "/chip", chip_id, "-",
                      Key(chip_id, resolved, emulator_version), ".calib.pb");
}

std::optional<hxemu::v1::Calibration> CalibrationCache::Load(
    uint32_t chip_id, const hxemu::v1::CalibrationTargets& resolved,
    absl::string_view emulator_version) const {
  if (dir_.empty()) return std::nullopt;
  std::ifstream in(PathFor(chip_id, resolved, emulator_version),
                   std::ios::binary);
  if (!in) return std::nullopt;
  std::stringstream buffer;
  buffer << in.rdbuf();
  hxemu::v1::Calibration cal;
  if (!cal.ParseFromString(buffer.str())) return std::nullopt;
  // A hash collision or a foreign file must never be served.
  if (cal.chip_id() != chip_id || cal.emulator_version() != emulator_version ||
      Deterministic(cal.targets()) != Deterministic(resolved)) {
    return std::nullopt;
  }
  return cal;
}

absl::Status CalibrationCache::Store(const hxemu::v1::Calibration& cal) const {
  if (dir_.empty()) return absl::OkStatus();
  std::error_code ec;
  std::filesystem::create_directories(dir_, ec);
  if (ec) {
    return absl::UnavailableError(absl::StrCat(
        "calibration cache: cannot create ", dir_, ": ", ec.message()));
  }
  const std::string path =
      PathFor(cal.chip_id(), cal.targets(), cal.emulator_version());
  const std::string tmp = absl::StrCat(path, ".tmp");
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out || !cal.SerializeToOstream(&out) || !out.flush()) {
      std::filesystem::remove(tmp, ec);
      return absl::UnavailableError(
          absl::StrCat("calibration cache: cannot write ", tmp));
    }
  }
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::filesystem::remove(tmp, ec);
    return absl::UnavailableError(absl::StrCat(
        "calibration cache: cannot rename to ", path, ": ", ec.message()));
  }
  return absl::OkStatus();
}

}  // namespace hxemu::calibration

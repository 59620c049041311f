#include "hxemu/scheduler/job_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <iostream>
#include <limits>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace hxemu::scheduler {
namespace {

// File layout: magic "HXJS" | u32 kind | u64 payload length | payload |
// u64 FNV-1a of the payload. All integers little-endian.
constexpr char kMagic[4] = {'H', 'X', 'J', 'S'};
constexpr uint32_t kKindRecord = 1;
constexpr uint32_t kKindExperiment = 2;
constexpr uint32_t kKindResult = 3;
constexpr size_t kHeaderBytes = 4 + 4 + 8;
constexpr size_t kTrailerBytes = 8;
// Version of the record encoding (first field of a record payload).
constexpr uint32_t kRecordVersion = 1;

constexpr char kRecordSuffix[] = ".job";
constexpr char kExperimentSuffix[] = ".exp";
constexpr char kResultSuffix[] = ".res";
constexpr char kTempSuffix[] = ".tmp";

uint64_t Fnv1a(absl::string_view bytes) {
  uint64_t h = 14695981039346656037ull;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

void PutU32(std::string* out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out->push_back(static_cast<char>(v >> (8 * i)));
}
void PutU64(std::string* out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>(v >> (8 * i)));
}
void PutI64(std::string* out, int64_t v) {
  PutU64(out, static_cast<uint64_t>(v));
}
void PutString(std::string* out, absl::string_view s) {
  PutU64(out, s.size());
  out->append(s.data(), s.size());
}
void PutDouble(std::string* out, double v) {
  uint64_t bits;
  static_assert(sizeof(bits) == sizeof(v));
  std::memcpy(&bits, &v, sizeof(bits));
  PutU64(out, bits);
}
// Times as unix nanoseconds; the infinities as the int64 extremes.
void PutTime(std::string* out, absl::Time t) {
  if (t == absl::InfinitePast()) {
    PutI64(out, std::numeric_limits<int64_t>::min());
  } else if (t == absl::InfiniteFuture()) {
    PutI64(out, std::numeric_limits<int64_t>::max());
  } else {
    PutI64(out, absl::ToUnixNanos(t));
  }
}
void PutDuration(std::string* out, absl::Duration d) {
  PutI64(out, d == absl::InfiniteDuration()
                  ? std::numeric_limits<int64_t>::max()
                  : absl::ToInt64Nanoseconds(d));
}
void PutOptionalU32(std::string* out, const std::optional<uint32_t>& v) {
  out->push_back(v.has_value() ? 1 : 0);
  PutU32(out, v.value_or(0));
}

// Reads what the Put* functions wrote; any overrun sets `ok` to false.
class Reader {
 public:
  explicit Reader(absl::string_view bytes) : bytes_(bytes) {}
  bool ok() const { return ok_; }
  bool at_end() const { return pos_ == bytes_.size(); }

  uint64_t U(int n) {
    if (!ok_ || bytes_.size() - pos_ < static_cast<size_t>(n)) {
      ok_ = false;
      return 0;
    }
    uint64_t v = 0;
    for (int i = 0; i < n; ++i) {
      v |= uint64_t{static_cast<unsigned char>(bytes_[pos_ + i])} << (8 * i);
    }
    pos_ += n;
    return v;
  }
  uint32_t U32() { return static_cast<uint32_t>(U(4)); }
  uint64_t U64() { return U(8); }
  int64_t I64() { return static_cast<int64_t>(U(8)); }
  uint8_t U8() { return static_cast<uint8_t>(U(1)); }
  double Double() {
    const uint64_t bits = U64();
    double v;
    std::memcpy(&v, &bits, sizeof(v));
    return v;
  }
  std::string String() {
    const uint64_t n = U64();
    if (!ok_ || bytes_.size() - pos_ < n) {
      ok_ = false;
      return {};
    }
    std::string s(bytes_.substr(pos_, n));
    pos_ += n;
    return s;
  }
  absl::Time Time() {
    const int64_t ns = I64();
    if (ns == std::numeric_limits<int64_t>::min()) return absl::InfinitePast();
    if (ns == std::numeric_limits<int64_t>::max()) {
      return absl::InfiniteFuture();
    }
    return absl::FromUnixNanos(ns);
  }
  absl::Duration Duration() {
    const int64_t ns = I64();
    return ns == std::numeric_limits<int64_t>::max() ? absl::InfiniteDuration()
                                                     : absl::Nanoseconds(ns);
  }
  std::optional<uint32_t> OptionalU32() {
    const bool has = U8() != 0;
    const uint32_t v = U32();
    if (!has) return std::nullopt;
    return v;
  }

 private:
  absl::string_view bytes_;
  size_t pos_ = 0;
  bool ok_ = true;
};

std::string Errno(const char* what, const std::string& path) {
  return absl::StrCat(what, " '", path, "': ", std::strerror(errno));
}

// Writes all of `data` to `fd`; false on error (errno set).
bool WriteAll(int fd, absl::string_view data) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

absl::StatusOr<std::string> ReadWholeFile(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::NotFoundError(Errno("cannot open", path));
  std::string data;
  char buffer[1 << 16];
  for (;;) {
    const ssize_t n = ::read(fd, buffer, sizeof(buffer));
    if (n < 0) {
      if (errno == EINTR) continue;
      const std::string error = Errno("cannot read", path);
      ::close(fd);
      return absl::DataLossError(error);
    }
    if (n == 0) break;
    data.append(buffer, static_cast<size_t>(n));
  }
  ::close(fd);
  return data;
}

// The payload of a file written by WriteFile with kind `kind`.
absl::StatusOr<std::string> Unwrap(absl::string_view file, uint32_t kind) {
  if (file.size() < kHeaderBytes + kTrailerBytes ||
      std::memcmp(file.data(), kMagic, sizeof(kMagic)) != 0) {
    return absl::DataLossError("not a state file (bad magic or too short)");
  }
  Reader header(file.substr(4, kHeaderBytes - 4));
  const uint32_t file_kind = header.U32();
  const uint64_t length = header.U64();
  if (file_kind != kind) {
    return absl::DataLossError(
        absl::StrCat("holds kind ", file_kind, ", expected ", kind));
  }
  if (length != file.size() - kHeaderBytes - kTrailerBytes) {
    return absl::DataLossError(absl::StrCat(
        "truncated or padded: payload of ", length, " bytes announced, ",
        file.size() - kHeaderBytes - kTrailerBytes, " present"));
  }
  absl::string_view payload = file.substr(kHeaderBytes, length);
  Reader trailer(file.substr(kHeaderBytes + length));
  if (trailer.U64() != Fnv1a(payload)) {
    return absl::DataLossError("checksum mismatch");
  }
  return std::string(payload);
}

bool IsTerminalState(JobState state) { return IsTerminal(state); }

bool ValidStateCode(uint32_t v) {
  return v <= static_cast<uint32_t>(JobState::kExpired);
}
bool ValidReasonCode(uint32_t v) {
  return v <= static_cast<uint32_t>(Reason::kExpiredWhileRunning);
}

// Job ids are 32 lowercase hex digits (job_id.h); anything else in a file
// name is not ours. (Also keeps ids from naming paths.)
bool ValidJobId(absl::string_view id) {
  if (id.empty() || id.size() > 128) return false;
  for (char c : id) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
          (c >= 'A' && c <= 'Z') || c == '-' || c == '_')) {
      return false;
    }
  }
  return true;
}

}  // namespace

std::string EncodeJobRecord(const JobRecord& r) {
  std::string out;
  PutU32(&out, kRecordVersion);
  PutString(&out, r.id);
  PutString(&out, r.user);
  PutU64(&out, r.seq);
  PutString(&out, r.request_id);
  PutU64(&out, r.request_fingerprint);
  PutU64(&out, r.config_key);
  PutOptionalU32(&out, r.pinned_chip);
  PutDouble(&out, r.runtime_ms);
  PutTime(&out, r.submit_time);
  PutDuration(&out, r.max_wall_time);
  PutU32(&out, static_cast<uint32_t>(r.state));
  PutU32(&out, static_cast<uint32_t>(r.reason));
  PutString(&out, r.state_reason);
  PutU32(&out, static_cast<uint32_t>(r.error.code()));
  PutString(&out, r.error.message());
  PutOptionalU32(&out, r.chip_id);
  PutTime(&out, r.start_time);
  PutTime(&out, r.end_time);
  PutI64(&out, r.result_bytes);
  PutString(&out, r.result_evicted_reason);
  return out;
}

absl::StatusOr<JobRecord> DecodeJobRecord(absl::string_view bytes) {
  Reader in(bytes);
  const uint32_t version = in.U32();
  if (in.ok() && version != kRecordVersion) {
    return absl::DataLossError(absl::StrCat("record version ", version,
                                            ", expected ", kRecordVersion));
  }
  JobRecord r;
  r.id = in.String();
  r.user = in.String();
  r.seq = in.U64();
  r.request_id = in.String();
  r.request_fingerprint = in.U64();
  r.config_key = in.U64();
  r.pinned_chip = in.OptionalU32();
  r.runtime_ms = in.Double();
  r.submit_time = in.Time();
  r.max_wall_time = in.Duration();
  const uint32_t state = in.U32();
  const uint32_t reason = in.U32();
  r.state_reason = in.String();
  const uint32_t code = in.U32();
  const std::string message = in.String();
  r.chip_id = in.OptionalU32();
  r.start_time = in.Time();
  r.end_time = in.Time();
  r.result_bytes = in.I64();
  r.result_evicted_reason = in.String();
  if (!in.ok() || !in.at_end()) {
    return absl::DataLossError("record truncated or with trailing bytes");
  }
  if (!ValidStateCode(state) || !ValidReasonCode(reason) || code > 16 ||
      !ValidJobId(r.id) || r.user.empty() || r.seq == 0) {
    return absl::DataLossError("record with out-of-range fields");
  }
  r.state = static_cast<JobState>(state);
  r.reason = static_cast<Reason>(reason);
  r.error = absl::Status(static_cast<absl::StatusCode>(code), message);
  return r;
}

absl::StatusOr<std::unique_ptr<FileJobStore>> FileJobStore::Open(
    const std::string& dir) {
  if (dir.empty()) {
    return absl::InvalidArgumentError("state_dir: must not be empty");
  }
  // mkdir -p, one level of parent is enough for typical use; do all.
  for (size_t slash = dir.find('/', 1);; slash = dir.find('/', slash + 1)) {
    const std::string prefix =
        slash == std::string::npos ? dir : dir.substr(0, slash);
    if (::mkdir(prefix.c_str(), 0700) != 0 && errno != EEXIST) {
      return absl::InvalidArgumentError(
          absl::StrCat("state_dir: ", Errno("cannot create", prefix)));
    }
    if (slash == std::string::npos) break;
  }
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("state_dir: ", Errno("cannot open directory", dir)));
  }
  // One store per directory: two servers would overwrite each other's
  // records. (Released when the process dies, also by SIGKILL.)
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const std::string error = errno == EWOULDBLOCK
                                  ? "in use by another server (locked)"
                                  : Errno("cannot lock", dir);
    ::close(fd);
    return absl::InvalidArgumentError(
        absl::StrCat("state_dir: '", dir, "': ", error));
  }
  auto store = std::unique_ptr<FileJobStore>(new FileJobStore(dir, fd));
  // Writable? (A probe file, written the way every entry is.)
  if (absl::Status s = store->WriteFile(".probe", kKindRecord, ""); !s.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("state_dir: not writable: ", s.message()));
  }
  (void)store->RemoveFile(".probe");
  return store;
}

FileJobStore::FileJobStore(std::string dir, int dir_fd)
    : dir_(std::move(dir)), dir_fd_(dir_fd) {}

FileJobStore::~FileJobStore() { ::close(dir_fd_); }

absl::Status FileJobStore::WriteFile(const std::string& name, uint32_t kind,
                                     const std::string& payload) {
  const std::string path = absl::StrCat(dir_, "/", name);
  const std::string temp = absl::StrCat(path, kTempSuffix);
  std::string header(kMagic, sizeof(kMagic));
  PutU32(&header, kind);
  PutU64(&header, payload.size());
  std::string trailer;
  PutU64(&trailer, Fnv1a(payload));

  const int fd =
      ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return absl::UnavailableError(Errno("cannot create", temp));
  const bool written = WriteAll(fd, header) && WriteAll(fd, payload) &&
                       WriteAll(fd, trailer) && ::fsync(fd) == 0;
  const std::string write_error = written ? "" : Errno("cannot write", temp);
  ::close(fd);
  if (!written) {
    ::unlink(temp.c_str());
    return absl::UnavailableError(write_error);
  }
  if (::rename(temp.c_str(), path.c_str()) != 0) {
    const std::string error = Errno("cannot rename to", path);
    ::unlink(temp.c_str());
    return absl::UnavailableError(error);
  }
  // The rename itself is durable only once the directory is.
  if (::fsync(dir_fd_) != 0) {
    return absl::UnavailableError(Errno("cannot fsync directory", dir_));
  }
  return absl::OkStatus();
}

absl::Status FileJobStore::RemoveFile(const std::string& name) {
  const std::string path = absl::StrCat(dir_, "/", name);
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return absl::UnavailableError(Errno("cannot remove", path));
  }
  // No fsync: an entry reappearing after a crash is removed again (a
  // forgotten record is past its TTL at the next start; a dropped payload
  // is ignored for its record's state).
  return absl::OkStatus();
}

absl::Status FileJobStore::PutRecord(const JobRecord& record) {
  if (!ValidJobId(record.id)) {
    return absl::InvalidArgumentError("job id: not storable");
  }
  return WriteFile(record.id + kRecordSuffix, kKindRecord,
                   EncodeJobRecord(record));
}

absl::Status FileJobStore::PutExperiment(const std::string& job_id,
                                         const hxemu::v1::Experiment& exp) {
  if (!ValidJobId(job_id)) {
    return absl::InvalidArgumentError("job id: not storable");
  }
  return WriteFile(job_id + kExperimentSuffix, kKindExperiment,
                   exp.SerializeAsString());
}

absl::Status FileJobStore::PutResult(const std::string& job_id,
                                     const hxemu::v1::Result& result) {
  if (!ValidJobId(job_id)) {
    return absl::InvalidArgumentError("job id: not storable");
  }
  return WriteFile(job_id + kResultSuffix, kKindResult,
                   result.SerializeAsString());
}

absl::Status FileJobStore::RemoveExperiment(const std::string& job_id) {
  return RemoveFile(job_id + kExperimentSuffix);
}

absl::Status FileJobStore::RemoveResult(const std::string& job_id) {
  return RemoveFile(job_id + kResultSuffix);
}

absl::Status FileJobStore::Remove(const std::string& job_id) {
  absl::Status status = RemoveFile(job_id + kRecordSuffix);
  status.Update(RemoveFile(job_id + kExperimentSuffix));
  status.Update(RemoveFile(job_id + kResultSuffix));
  return status;
}

std::vector<JobRecord> FileJobStore::Load() {
  // File names by kind: the records, and which payloads exist.
  std::vector<std::string> records;
  absl::flat_hash_map<std::string, bool> payloads;  // name -> seen
  std::vector<std::string> stray;                   // temp files etc.
  DIR* d = ::opendir(dir_.c_str());
  if (d == nullptr) {
    std::cerr << "hxemu: state_dir: " << Errno("cannot list", dir_)
              << "; starting with no stored jobs\n";
    return {};
  }
  while (const dirent* entry = ::readdir(d)) {
    const std::string name = entry->d_name;
    if (name == "." || name == "..") continue;
    if (absl::EndsWith(name, kRecordSuffix)) {
      records.push_back(name);
    } else if (absl::EndsWith(name, kExperimentSuffix) ||
               absl::EndsWith(name, kResultSuffix)) {
      payloads[name] = false;
    } else if (absl::EndsWith(name, kTempSuffix)) {
      stray.push_back(name);  // a write interrupted by a crash
    }
  }
  ::closedir(d);
  for (const std::string& name : stray) (void)RemoveFile(name);

  std::vector<JobRecord> jobs;
  for (const std::string& name : records) {
    const std::string id = name.substr(0, name.size() - 4);
    auto skip = [&](absl::string_view why) {
      std::cerr << "hxemu: state_dir: skipping job " << id << " (" << dir_
                << "/" << name << "): " << why << "\n";
      (void)Remove(id);
    };
    absl::StatusOr<std::string> file =
        ReadWholeFile(absl::StrCat(dir_, "/", name));
    absl::StatusOr<std::string> payload =
        file.ok() ? Unwrap(*file, kKindRecord) : file.status();
    absl::StatusOr<JobRecord> record =
        payload.ok() ? DecodeJobRecord(*payload) : payload.status();
    if (!record.ok()) {
      skip(record.status().message());
      continue;
    }
    if (record->id != id) {
      skip(absl::StrCat("the record is of job ", record->id));
      continue;
    }
    const std::string exp_name = id + kExperimentSuffix;
    const std::string res_name = id + kResultSuffix;
    if (!IsTerminalState(record->state)) {
      absl::StatusOr<std::string> exp_file =
          ReadWholeFile(absl::StrCat(dir_, "/", exp_name));
      absl::StatusOr<std::string> exp_bytes =
          exp_file.ok() ? Unwrap(*exp_file, kKindExperiment)
                        : exp_file.status();
      auto experiment = std::make_shared<hxemu::v1::Experiment>();
      if (!exp_bytes.ok() || !experiment->ParseFromString(*exp_bytes)) {
        skip(absl::StrCat("its experiment is missing or damaged: ",
                          exp_bytes.ok() ? "not an Experiment"
                                         : exp_bytes.status().message()));
        continue;
      }
      payloads[exp_name] = true;
      record->experiment = std::move(experiment);
    } else if (record->state == JobState::kSucceeded &&
               record->result_evicted_reason.empty()) {
      absl::StatusOr<std::string> res_file =
          ReadWholeFile(absl::StrCat(dir_, "/", res_name));
      absl::StatusOr<std::string> res_bytes =
          res_file.ok() ? Unwrap(*res_file, kKindResult) : res_file.status();
      auto result = std::make_shared<hxemu::v1::Result>();
      if (res_bytes.ok() && result->ParseFromString(*res_bytes)) {
        payloads[res_name] = true;
        record->result = std::move(result);
      } else {
        // The job stays succeeded; only its result is gone.
        std::cerr << "hxemu: state_dir: job " << id
                  << ": result missing or damaged ("
                  << (res_bytes.ok() ? "not a Result"
                                     : res_bytes.status().message())
                  << "); it is reported as evicted\n";
        record->result_evicted_reason =
            "result evicted: its stored copy was missing or damaged at "
            "server start";
      }
    }
    jobs.push_back(*std::move(record));
  }
  // Payloads of no (valid) record: left by a crash between writes.
  for (const auto& [name, used] : payloads) {
    if (!used) (void)RemoveFile(name);
  }
  return jobs;
}

}  // namespace hxemu::scheduler

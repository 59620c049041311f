// hxemu: the command-line client of an hxemu server.
//
//   hxemu submit experiment.json [--wait] [--out result.json]
//   hxemu status JOB | watch JOB | cancel JOB | result JOB --format csv
//   hxemu jobs | chips | info | help [COMMAND]
//
// Exit codes (see kUsage below and client/cpp/README.md) are part of the
// interface: scripts rely on them.
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "google/protobuf/io/tokenizer.h"
#include "google/protobuf/text_format.h"
#include "google/protobuf/util/json_util.h"
#include "hxemu/client/client.h"

ABSL_FLAG(std::string, address, "",
          "host:port of the hxemu server (default: $HXEMU_ADDRESS, else "
          "127.0.0.1:50051)");
ABSL_FLAG(std::string, user, "",
          "User name sent to the server (default: $QUIGGELDY_USER_NO_MUNGE, "
          "$HXEMU_USER, $USER, else 'anonymous', as the Python client)");
ABSL_FLAG(std::string, token, "",
          "Access token, sent as 'authorization: Bearer TOKEN' metadata "
          "(default: $HXEMU_TOKEN, else $QUIGGELDY_TOKEN)");
ABSL_FLAG(bool, tls, false,
          "Connect with TLS (implied by --tls_ca/--tls_cert/--tls_key)");
ABSL_FLAG(std::string, tls_ca, "",
          "PEM file of the CA certificates to trust (default: system roots)");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM file of the client certificate chain (mutual TLS)");
ABSL_FLAG(std::string, tls_key, "",
          "PEM file of the client private key (mutual TLS)");
ABSL_FLAG(std::string, tls_server_name, "",
          "Server name expected in its certificate (default: the host of "
          "--address)");
ABSL_FLAG(bool, wait, false, "submit: wait until the job has ended");
ABSL_FLAG(std::string, out, "",
          "submit --wait / result: write the result to this file ('-' = "
          "stdout)");
ABSL_FLAG(std::string, format, "",
          "Result format: json, csv or npy (default: from the --out file's "
          "extension, else json)");
ABSL_FLAG(bool, json, false,
          "status/cancel/jobs/chips/info/submit: print the reply as JSON");
ABSL_FLAG(absl::Duration, timeout, absl::Hours(1),
          "submit --wait / watch: give up after this long (exit 7; the job "
          "keeps running)");
ABSL_FLAG(int64_t, seed, -1, "submit: override the experiment's seed");
ABSL_FLAG(int32_t, chip, -1, "submit: run on this chip (overrides chip_id)");
ABSL_FLAG(int32_t, limit, 100, "jobs: list at most this many jobs");
ABSL_FLAG(bool, calibrated, false,
          "submit: start from the server's default calibration of the chip "
          "(Experiment.initial_config)");
ABSL_FLAG(std::string, initial_config, "",
          "submit: start from the hxemu.v1.Calibration in this file (json or "
          "text format, e.g. from 'hxemu calibration --out')");

namespace hxemu::cli {
namespace {

namespace pb = ::google::protobuf;
using ::hxemu::v1::Job;
using ::hxemu::v1::Result;

// Exit codes.
constexpr int kExitOk = 0;
constexpr int kExitOther = 1;
constexpr int kExitUsage = 2;
constexpr int kExitRejected = 3;
constexpr int kExitNotFound = 4;
constexpr int kExitJobNotSucceeded = 5;
constexpr int kExitUnreachable = 6;
constexpr int kExitTimeout = 7;
constexpr int kExitAuth = 8;

constexpr char kUsage[] =
    R"(hxemu: command-line client of an hxemu server (emulated BrainScaleS-2).

Usage: hxemu COMMAND [ARGS] [FLAGS]

Commands:
  submit FILE   Submit the experiment in FILE (.json, or text format
                .textproto/.txtpb/.pbtxt); prints the job id on stdout.
                --wait waits for the end; --out FILE then writes the result.
  status JOB    Show a job's state, progress and timing.
  watch JOB     Follow a job until it ends (progress bar on a terminal,
                one line per update otherwise).
  cancel JOB    Cancel a queued or running job.
  result JOB    Fetch a succeeded job's result: --format json|csv|npy,
                --out FILE (default stdout; npy needs --out).
  jobs          List your jobs, newest first.
  chips         List the emulated chips.
  info          Show the server's version, chips, limits and parameters.
  calibration   Get (and compute if needed) a chip's default calibration.
  help [COMMAND]  Show this help or a command's help (also COMMAND --help).

Connection (all commands):
  --address=HOST:PORT  server (default $HXEMU_ADDRESS, else 127.0.0.1:50051)
  --user=NAME          user name (default $QUIGGELDY_USER_NO_MUNGE,
                       $HXEMU_USER, $USER, else anonymous)
  --token=TOKEN        access token, sent as 'authorization: Bearer TOKEN'
                       (default $HXEMU_TOKEN, else $QUIGGELDY_TOKEN)
  --tls                use TLS; --tls_ca=PEM trusted CAs (default: system),
                       --tls_cert=PEM --tls_key=PEM client certificate,
                       --tls_server_name=NAME expected certificate name

Exit codes:
  0  ok
  1  other error (e.g. internal server error, cannot write --out)
  2  usage error, or unreadable / malformed experiment file (the message
     gives FILE:LINE:COLUMN for text format)
  3  the server rejected the request (invalid argument, e.g. a parameter out
     of range: the message on stderr names the field; result of a job that
     has not succeeded; queue full)
  4  not found (unknown job id)
  5  the job ended FAILED, CANCELLED or EXPIRED (submit --wait, watch)
  6  server unreachable (or TLS handshake failed)
  7  --timeout passed before the job ended (the job keeps running)
  8  not authenticated or not allowed (missing or rejected token)
)";

struct Command {
  const char* usage;
  // Flags the command takes besides the connection flags.
  std::set<std::string> flags;
  // Number of positional arguments.
  int num_args;
};

const std::map<std::string, Command>& Commands() {
  static const auto* commands = new std::map<std::string, Command>{
      {"submit",
       {R"(Usage: hxemu submit FILE [--wait] [--out RESULT] [--format json|csv|npy]
                    [--timeout 1h] [--seed N] [--chip N] [--json]
                    [--calibrated | --initial_config CALIBRATION]

Submits the hxemu.v1.Experiment in FILE: protobuf JSON (.json) or protobuf
text format (.textproto, .txtpb, .pbtxt; other names: guessed from the
content). Prints the job id on stdout (with --json: the Job as JSON).
--seed / --chip override the file's seed / chip_id. --calibrated starts
every HX neuron from the server's default calibration of its circuit
(parameters the file sets still win; the job runs on the calibration's
chip); --initial_config FILE uses a stored hxemu.v1.Calibration instead.
With --wait, waits until the job has ended (at most --timeout; a progress
bar on stderr if it is a terminal) and exits 5 if it did not succeed; with
--out it then writes the result like 'hxemu result'. Exit codes: 2 bad
file, 3 rejected (stderr names the field), 5 job not succeeded, 6 server
unreachable, 7 --timeout passed.
)",
        {"wait", "out", "format", "timeout", "seed", "chip", "json",
         "calibrated", "initial_config"},
        1}},
      {"status",
       {R"(Usage: hxemu status JOB [--json]

Prints the job's state, reason, progress, chip and times. Exit 4 if the
job is unknown.
)",
        {"json"},
        1}},
      {"watch",
       {R"(Usage: hxemu watch JOB [--timeout 1h]

Follows the job until it ends: a progress bar when stdout is a terminal,
otherwise one line per update ("STATE progress/runtime ms reason").
Exit 0 if the job succeeded, 5 if it ended otherwise, 4 if unknown, 7 if
--timeout passed first.
)",
        {"timeout"},
        1}},
      {"cancel",
       {R"(Usage: hxemu cancel JOB [--json]

Cancels a queued or running job (a no-op for an ended job) and prints its
state. Exit 4 if the job is unknown.
)",
        {"json"},
        1}},
      {"result",
       {R"(Usage: hxemu result JOB [--format json|csv|npy] [--out FILE]

Fetches the result of a succeeded job (exit 3 if it has not succeeded).
  json  the hxemu.v1.Result message as protobuf JSON.
  csv   a header and one row per spike, MADC sample or CADC code:
          kind,population,neuron,circuit,observable,time_ticks,time_ms,value
        kind 'spike' (value empty), 'trace' (MADC: value = raw 10-bit
        code) or 'cadc' (value = 8-bit code of one circuit in one CADC
        read; population and neuron empty); observable
        spikes|v|exc_synin|inh_synin|adaptation; circuit = neuron circuit
        (0..511); time_ticks in 8 ns FPGA ticks, time_ms = time_ticks *
        8e-6 (ms hardware).
  npy   the same rows as one NumPy structured array (.npy version 1.0):
        dtype [('kind','S5'), ('population','<u4'), ('neuron','<u4'),
        ('circuit','<u4'), ('observable','S10'), ('time_ticks','<u8'),
        ('time_ms','<f8'), ('value','<i4')]; value -1 for spikes,
        population and neuron 4294967295 for CADC rows. Needs --out on a
        terminal.
Without --format the format follows the --out extension, else json.
)",
        {"format", "out"},
        1}},
      {"jobs",
       {R"(Usage: hxemu jobs [--limit 100] [--json]

Lists your (--user's) jobs, newest first.
)",
        {"limit", "json"},
        0}},
      {"chips",
       {R"(Usage: hxemu chips [--json]

Lists the emulated chips: busy or idle, queued jobs they may run.
)",
        {"json"},
        0}},
      {"info",
       {R"(Usage: hxemu info [--json]

Prints the server's version, chip model, number of chips, runtime limit
and the neuron parameter table (name, kind, range, default, unit).
)",
        {"json"},
        0}},
      {"calibration",
       {R"(Usage: hxemu calibration [--chip N] [--out FILE] [--json]

Gets the server's default calibration (calix targets) of chip N (default:
the server picks one that is ready, else chip 0): computed on the first
request (seconds), then served from the server's cache. Prints a summary;
--json prints it, --out FILE writes it (json, or text format for .textproto)
for 'hxemu submit --initial_config FILE'.
)",
        {"chip", "out", "json"},
        0}},
      {"help", {"Usage: hxemu help [COMMAND]\n", {}, -1}},
  };
  return *commands;
}

const std::set<std::string>& ConnectionFlags() {
  static const auto* flags = new std::set<std::string>{
      "address", "user",     "token",   "tls",
      "tls_ca",  "tls_cert", "tls_key", "tls_server_name"};
  return *flags;
}

int Fail(int code, absl::string_view message) {
  std::cerr << "hxemu: " << message << "\n";
  return code;
}

int UsageError(absl::string_view message) {
  std::cerr << "hxemu: " << message << "\nRun 'hxemu help' for usage.\n";
  return kExitUsage;
}

int ExitCodeFor(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kOk:
      return kExitOk;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kResourceExhausted:
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kUnimplemented:
      return kExitRejected;
    case absl::StatusCode::kNotFound:
      return kExitNotFound;
    case absl::StatusCode::kUnavailable:
      return kExitUnreachable;
    case absl::StatusCode::kDeadlineExceeded:
      return kExitTimeout;
    case absl::StatusCode::kUnauthenticated:
    case absl::StatusCode::kPermissionDenied:
      return kExitAuth;
    default:
      return kExitOther;
  }
}

int FailStatus(const absl::Status& status, absl::string_view what) {
  std::string reason;
  if (status.code() == absl::StatusCode::kDeadlineExceeded) {
    reason = " (--timeout passed; the job keeps running)";
  } else if (status.code() == absl::StatusCode::kUnauthenticated) {
    reason = " (check --token / $HXEMU_TOKEN)";
  }
  return Fail(ExitCodeFor(status),
              absl::StrCat(what, ": ", absl::StatusCodeToString(status.code()),
                           ": ", status.message(), reason));
}

std::string EnvOr(const char* name, const std::string& fallback) {
  const char* value = std::getenv(name);
  return value != nullptr && *value != '\0' ? std::string(value) : fallback;
}

// Reads a whole (PEM) file; false if it cannot be read.
bool ReadFile(const std::string& path, std::string* content) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::stringstream buffer;
  buffer << in.rdbuf();
  *content = buffer.str();
  return true;
}

// The connection the flags and environment ask for; nullptr after printing
// the reason (*code = exit code) if a TLS file cannot be read.
std::unique_ptr<client::Client> ConnectFromFlags(int* code) {
  client::ConnectOptions options;
  options.address = absl::GetFlag(FLAGS_address);
  if (options.address.empty()) {
    options.address = EnvOr("HXEMU_ADDRESS", "127.0.0.1:50051");
  }
  options.user = absl::GetFlag(FLAGS_user);
  if (options.user.empty()) {
    options.user = EnvOr("QUIGGELDY_USER_NO_MUNGE",
                         EnvOr("HXEMU_USER", EnvOr("USER", "anonymous")));
  }
  options.token = absl::GetFlag(FLAGS_token);
  if (options.token.empty()) {
    options.token = EnvOr("HXEMU_TOKEN", EnvOr("QUIGGELDY_TOKEN", ""));
  }
  client::TlsOptions& tls = options.tls;
  const std::pair<std::string, std::string*> files[] = {
      {absl::GetFlag(FLAGS_tls_ca), &tls.root_certs_pem},
      {absl::GetFlag(FLAGS_tls_cert), &tls.client_cert_pem},
      {absl::GetFlag(FLAGS_tls_key), &tls.client_key_pem}};
  tls.enabled = absl::GetFlag(FLAGS_tls);
  for (const auto& [path, content] : files) {
    if (path.empty()) continue;
    tls.enabled = true;
    if (!ReadFile(path, content)) {
      *code = Fail(kExitUsage, absl::StrCat("cannot read ", path));
      return nullptr;
    }
  }
  if (tls.client_cert_pem.empty() != tls.client_key_pem.empty()) {
    *code = UsageError("--tls_cert and --tls_key go together");
    return nullptr;
  }
  tls.server_name_override = absl::GetFlag(FLAGS_tls_server_name);
  if (!tls.server_name_override.empty()) tls.enabled = true;
  return client::Client::Connect(options);
}

using client::IsTerminal;

std::string StateName(v1::JobState state) {
  return std::string(absl::StripPrefix(v1::JobState_Name(state), "JOB_STATE_"));
}

std::string ObservableName(v1::Observable observable) {
  return absl::AsciiStrToLower(
      absl::StripPrefix(v1::Observable_Name(observable), "OBSERVABLE_"));
}

std::string FormatTime(int64_t unix_ms) {
  if (unix_ms == 0) return "-";
  return absl::FormatTime("%Y-%m-%d %H:%M:%E3S UTC",
                          absl::FromUnixMillis(unix_ms), absl::UTCTimeZone());
}

// Protobuf JSON (uint64 as strings, enums by name); `indent` = one field per
// line, else one line (results: one number per line would be huge).
std::string ToJson(const pb::Message& message, bool indent = true) {
  std::string json;
  pb::util::JsonPrintOptions options;
  options.add_whitespace = indent;
  options.preserve_proto_field_names = true;
  // Scripts find every field, also those at their default (chip 0, ...).
  options.always_print_primitive_fields = true;
  (void)pb::util::MessageToJsonString(message, &json, options);
  if (!indent) json.push_back('\n');
  return json;
}

void PrintJob(const Job& job) {
  std::cout << "job:      " << job.job_id() << "\n"
            << "state:    " << StateName(job.state()) << "\n";
  if (!job.state_reason().empty()) {
    std::cout << "reason:   " << job.state_reason() << "\n";
  }
  if (job.state() == v1::JOB_STATE_FAILED) {
    std::cout << "error:    "
              << absl::StatusCodeToString(
                     static_cast<absl::StatusCode>(job.error().code()))
              << ": " << job.error().message() << "\n";
  }
  std::cout << absl::StreamFormat("progress: %.3f / %.3f ms\n",
                                  job.progress_ms(), job.runtime_ms());
  if (job.state() == v1::JOB_STATE_QUEUED) {
    std::cout << "queue:    " << job.queue_position() << " jobs ahead ("
              << job.jobs_ahead_own() << " own, "
              << job.jobs_ahead_other_users() << " of other users)\n";
    if (job.estimated_start_time_unix_ms() != 0) {
      std::cout << "eta:      "
                << FormatTime(job.estimated_start_time_unix_ms())
                << " (estimated start)\n";
    }
  }
  std::cout << "chip:     "
            << (job.has_chip_id() ? absl::StrCat(job.chip_id()) : "-") << "\n"
            << "user:     " << job.user() << "\n"
            << "submit:   " << FormatTime(job.submit_time_unix_ms()) << "\n"
            << "start:    " << FormatTime(job.start_time_unix_ms()) << "\n"
            << "end:      " << FormatTime(job.end_time_unix_ms()) << "\n";
  if (job.deadline_unix_ms() != 0) {
    std::cout << "deadline: " << FormatTime(job.deadline_unix_ms()) << "\n";
  }
  if (job.state() == v1::JOB_STATE_SUCCEEDED) {
    if (job.result_evicted()) {
      std::cout << "result:   evicted (no longer kept by the server)\n";
    } else {
      std::cout << "result:   " << job.result_bytes() << " bytes, kept until "
                << FormatTime(job.result_expire_time_unix_ms()) << "\n";
    }
  }
}

// Collects text-format parse errors as "FILE:LINE:COLUMN: message".
class ErrorCollector : public pb::io::ErrorCollector {
 public:
  explicit ErrorCollector(std::string path) : path_(std::move(path)) {}
  void AddError(int line, int column, const std::string& message) override {
    absl::StrAppend(&errors_, path_, ":", line + 1, ":", column + 1, ": ",
                    message, "\n");
  }
  void AddWarning(int, int, const std::string&) override {}
  const std::string& errors() const { return errors_; }

 private:
  std::string path_;
  std::string errors_;
};

// Reads a message (an Experiment, a Calibration) from a JSON or text-format
// file; returns an exit code.
int ReadMessage(const std::string& path, pb::Message* message) {
  const std::string type = message->GetDescriptor()->full_name();
  std::ifstream in(path, std::ios::binary);
  if (!in) return Fail(kExitUsage, absl::StrCat("cannot read ", path));
  std::stringstream buffer;
  buffer << in.rdbuf();
  const std::string content = buffer.str();
  bool json;
  if (absl::EndsWith(path, ".json")) {
    json = true;
  } else if (absl::EndsWith(path, ".textproto") ||
             absl::EndsWith(path, ".txtpb") || absl::EndsWith(path, ".pbtxt")) {
    json = false;
  } else {
    json = absl::StartsWith(absl::StripLeadingAsciiWhitespace(content), "{");
  }
  if (json) {
    pb::util::JsonParseOptions options;
    auto parsed = pb::util::JsonStringToMessage(content, message, options);
    if (!parsed.ok()) {
      return Fail(kExitUsage,
                  absl::StrCat(path, ": not a valid JSON ", type, ": ",
                               std::string(parsed.message())));
    }
    return kExitOk;
  }
  pb::TextFormat::Parser parser;
  ErrorCollector errors(path);
  parser.RecordErrorsTo(&errors);
  if (!parser.ParseFromString(content, message)) {
    return Fail(kExitUsage, absl::StrCat("not a valid text-format ", type,
                                         ":\n", errors.errors()));
  }
  return kExitOk;
}

std::string ResultFormat() {
  std::string format = absl::GetFlag(FLAGS_format);
  if (!format.empty()) return format;
  const std::string out = absl::GetFlag(FLAGS_out);
  if (absl::EndsWith(out, ".csv")) return "csv";
  if (absl::EndsWith(out, ".npy")) return "npy";
  return "json";
}

// One row of the csv/npy formats: a spike, an MADC sample or one circuit's
// code of a CADC read.
struct Row {
  absl::string_view kind;  // "spike", "trace" or "cadc"
  // Population and neuron index; unknown (-1) for CADC rows, which are per
  // neuron circuit.
  int64_t population;
  int64_t neuron;
  uint32_t circuit;
  absl::string_view observable;
  uint64_t time_ticks;
  int32_t value;  // ADC code; -1 for spikes
};

// Calls `emit` for every row: spikes, then MADC samples, then CADC reads, each
// in the order of the result.
template <typename Emit>
void ForEachRow(const Result& result, Emit emit) {
  for (const v1::SpikeTrain& train : result.spike_trains()) {
    for (uint64_t t : train.times_ticks()) {
      emit(Row{"spike", train.population(), train.neuron(), train.circuit(),
               "spikes", t, -1});
    }
  }
  for (const v1::Trace& trace : result.traces()) {
    const std::string observable = ObservableName(trace.observable());
    const int n = std::min(trace.times_ticks_size(), trace.codes_size());
    for (int i = 0; i < n; ++i) {
      emit(Row{"trace", trace.population(), trace.neuron(), trace.circuit(),
               observable, trace.times_ticks(i),
               static_cast<int32_t>(trace.codes(i))});
    }
  }
  for (const v1::CadcRead& read : result.cadc_reads()) {
    const int n = std::min(read.codes_size(), result.cadc_circuits_size());
    for (int i = 0; i < n; ++i) {
      emit(Row{"cadc", -1, -1, result.cadc_circuits(i), "v", read.time_ticks(),
               static_cast<int32_t>(read.codes(i))});
    }
  }
}

std::string ResultCsv(const Result& result) {
  std::string csv =
      "kind,population,neuron,circuit,observable,time_ticks,time_ms,value\n";
  const auto optional = [](int64_t v) {
    return v < 0 ? std::string() : absl::StrCat(v);
  };
  ForEachRow(result, [&](const Row& row) {
    absl::StrAppendFormat(
        &csv, "%s,%s,%s,%u,%s,%u,%.6f,%s\n", row.kind, optional(row.population),
        optional(row.neuron), row.circuit, row.observable, row.time_ticks,
        client::TicksToMs(row.time_ticks), optional(row.value));
  });
  return csv;
}

// Little-endian raw bytes of a trivially copyable value.
template <typename T>
void AppendLe(std::string* out, T value) {
  static_assert(std::endian::native == std::endian::little);
  out->append(reinterpret_cast<const char*>(&value), sizeof(value));
}

void AppendFixed(std::string* out, absl::string_view text, size_t width) {
  std::string field(text.substr(0, width));
  field.resize(width, '\0');
  out->append(field);
}

std::string ResultNpy(const Result& result) {
  // Unknown population / neuron (CADC rows) as the largest uint32.
  constexpr uint32_t kUnknown = 0xffffffff;
  std::string rows;
  size_t count = 0;
  ForEachRow(result, [&](const Row& row) {
    AppendFixed(&rows, row.kind, 5);
    AppendLe(&rows, row.population < 0 ? kUnknown
                                       : static_cast<uint32_t>(row.population));
    AppendLe(&rows,
             row.neuron < 0 ? kUnknown : static_cast<uint32_t>(row.neuron));
    AppendLe(&rows, row.circuit);
    AppendFixed(&rows, row.observable, 10);
    AppendLe(&rows, row.time_ticks);
    AppendLe(&rows, client::TicksToMs(row.time_ticks));
    AppendLe(&rows, row.value);
    ++count;
  });
  std::string header = absl::StrCat(
      "{'descr': [('kind', '|S5'), ('population', '<u4'), ('neuron', '<u4'), "
      "('circuit', '<u4'), ('observable', '|S10'), ('time_ticks', '<u8'), "
      "('time_ms', '<f8'), ('value', '<i4')], 'fortran_order': False, "
      "'shape': (",
      count, ",), }");
  // Magic (6) + version (2) + length (2) + header + '\n': multiple of 64.
  const size_t unpadded = 10 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header.push_back('\n');
  std::string npy("\x93NUMPY\x01\x00", 8);
  AppendLe(&npy, static_cast<uint16_t>(header.size()));
  npy += header;
  npy += rows;
  return npy;
}

// Writes `result` to --out (or stdout) in the chosen format.
int WriteResult(const Result& result, const std::string& format) {
  std::string data;
  if (format == "json") {
    data = ToJson(result, /*indent=*/false);
  } else if (format == "csv") {
    data = ResultCsv(result);
  } else if (format == "npy") {
    data = ResultNpy(result);
  } else {
    return UsageError(
        absl::StrCat("unknown --format '", format, "' (json, csv or npy)"));
  }
  const std::string out = absl::GetFlag(FLAGS_out);
  if (out.empty() || out == "-") {
    if (format == "npy" && isatty(STDOUT_FILENO)) {
      return UsageError("--format npy needs --out FILE");
    }
    std::cout << data;
    std::cout.flush();
    return std::cout ? kExitOk : kExitOther;
  }
  std::ofstream file(out, std::ios::binary | std::ios::trunc);
  file << data;
  file.close();
  if (!file) return Fail(kExitOther, absl::StrCat("cannot write ", out));
  return kExitOk;
}

int JobEndCode(const Job& job) {
  if (job.state() == v1::JOB_STATE_SUCCEEDED) return kExitOk;
  std::string message =
      absl::StrCat("job ", job.job_id(), " ended ", StateName(job.state()));
  if (!job.state_reason().empty()) {
    absl::StrAppend(&message, ": ", job.state_reason());
  }
  if (job.state() == v1::JOB_STATE_FAILED && !job.error().message().empty()) {
    absl::StrAppend(&message, " (", job.error().message(), ")");
  }
  return Fail(kExitJobNotSucceeded, message);
}

// Prints a job's updates: a progress bar redrawn in place on a terminal,
// else one line per update ("STATE progress/runtime ms reason").
client::JobCallback ProgressPrinter(std::ostream& out, bool tty) {
  return [&out, tty](const Job& job) {
    const double fraction =
        job.runtime_ms() > 0 ? job.progress_ms() / job.runtime_ms() : 0.0;
    if (tty) {
      constexpr int kWidth = 30;
      const int filled =
          std::clamp(static_cast<int>(fraction * kWidth + 0.5), 0, kWidth);
      out << absl::StreamFormat(
          "\r%-9s [%s%s] %5.1f%% %.3f/%.3f ms %-30.30s", StateName(job.state()),
          std::string(filled, '#'), std::string(kWidth - filled, '.'),
          100 * fraction, job.progress_ms(), job.runtime_ms(),
          job.state_reason());
      if (IsTerminal(job.state())) out << "\n";
    } else {
      out << absl::StreamFormat("%s %.3f/%.3f ms %s\n", StateName(job.state()),
                                job.progress_ms(), job.runtime_ms(),
                                job.state_reason());
    }
    out.flush();
  };
}

int Submit(const std::vector<std::string>& args) {
  v1::Experiment experiment;
  if (int code = ReadMessage(args[0], &experiment); code != kExitOk) {
    return code;
  }
  const std::string initial_config = absl::GetFlag(FLAGS_initial_config);
  if (!initial_config.empty()) {
    if (absl::GetFlag(FLAGS_calibrated)) {
      return UsageError("--calibrated and --initial_config exclude each other");
    }
    if (int code =
            ReadMessage(initial_config, experiment.mutable_initial_config());
        code != kExitOk) {
      return code;
    }
  }
  if (absl::GetFlag(FLAGS_seed) >= 0) {
    experiment.set_seed(static_cast<uint64_t>(absl::GetFlag(FLAGS_seed)));
  }
  if (absl::GetFlag(FLAGS_chip) >= 0) {
    experiment.set_chip_id(static_cast<uint32_t>(absl::GetFlag(FLAGS_chip)));
  }
  const std::string format = ResultFormat();
  if (format != "json" && format != "csv" && format != "npy") {
    return UsageError(absl::StrCat("unknown --format '", format, "'"));
  }
  if (!absl::GetFlag(FLAGS_wait) && !absl::GetFlag(FLAGS_out).empty()) {
    return UsageError("submit: --out needs --wait");
  }
  int code = kExitOk;
  auto client = ConnectFromFlags(&code);
  if (client == nullptr) return code;
  if (absl::GetFlag(FLAGS_calibrated)) {
    // The default calibration of the chip the job will run on (the server
    // picks one if the experiment names none).
    std::optional<uint32_t> chip;
    if (experiment.has_chip_id()) chip = experiment.chip_id();
    auto calibration = client->GetCalibration(chip);
    if (!calibration.ok())
      return FailStatus(calibration.status(), "calibration");
    if (!calibration->warning().empty()) {
      std::cerr << "hxemu: chip " << calibration->chip_id() << ": "
                << calibration->warning() << "\n";
    }
    *experiment.mutable_initial_config() = *std::move(calibration);
  }
  auto job = client->Submit(experiment);
  if (!job.ok()) return FailStatus(job.status(), "submit rejected");
  if (absl::GetFlag(FLAGS_json)) {
    std::cout << ToJson(*job);
  } else {
    std::cout << job->job_id() << "\n";
  }
  std::cout.flush();
  if (!absl::GetFlag(FLAGS_wait)) return kExitOk;

  // On a terminal the wait shows a progress bar (on stderr: stdout has the
  // job id for scripts); otherwise it is silent.
  const bool tty = isatty(STDERR_FILENO) != 0;
  auto done =
      tty ? client->WatchJob(job->job_id(), ProgressPrinter(std::cerr, true),
                             absl::GetFlag(FLAGS_timeout))
          : client->WaitJob(job->job_id(), absl::GetFlag(FLAGS_timeout));
  if (!done.ok()) {
    if (tty) std::cerr << "\n";
    return FailStatus(done.status(), "wait");
  }
  if (int end = JobEndCode(*done); end != kExitOk) return end;
  std::cerr << "job " << done->job_id() << " SUCCEEDED on chip "
            << done->chip_id() << "\n";
  if (absl::GetFlag(FLAGS_out).empty()) return kExitOk;
  auto result = client->GetResult(job->job_id());
  if (!result.ok()) return FailStatus(result.status(), "result");
  return WriteResult(*result, format);
}

int Status(const std::vector<std::string>& args) {
  int code = kExitOk;
  auto connection = ConnectFromFlags(&code);
  if (connection == nullptr) return code;
  auto job = connection->GetJob(args[0]);
  if (!job.ok()) return FailStatus(job.status(), "status");
  if (absl::GetFlag(FLAGS_json)) {
    std::cout << ToJson(*job);
  } else {
    PrintJob(*job);
  }
  return kExitOk;
}

int Cancel(const std::vector<std::string>& args) {
  int code = kExitOk;
  auto connection = ConnectFromFlags(&code);
  if (connection == nullptr) return code;
  auto job = connection->CancelJob(args[0]);
  if (!job.ok()) return FailStatus(job.status(), "cancel");
  if (absl::GetFlag(FLAGS_json)) {
    std::cout << ToJson(*job);
  } else {
    std::cout << job->job_id() << " " << StateName(job->state()) << "\n";
  }
  return kExitOk;
}

int Watch(const std::vector<std::string>& args) {
  const bool tty = isatty(STDOUT_FILENO) != 0;
  auto on_update = ProgressPrinter(std::cout, tty);
  int code = kExitOk;
  auto connection = ConnectFromFlags(&code);
  if (connection == nullptr) return code;
  auto job =
      connection->WatchJob(args[0], on_update, absl::GetFlag(FLAGS_timeout));
  if (!job.ok()) {
    if (tty) std::cout << "\n";
    return FailStatus(job.status(), "watch");
  }
  return JobEndCode(*job);
}

int GetResult(const std::vector<std::string>& args) {
  const std::string format = ResultFormat();
  if (format != "json" && format != "csv" && format != "npy") {
    return UsageError(
        absl::StrCat("unknown --format '", format, "' (json, csv or npy)"));
  }
  int code = kExitOk;
  auto connection = ConnectFromFlags(&code);
  if (connection == nullptr) return code;
  auto result = connection->GetResult(args[0]);
  if (!result.ok()) return FailStatus(result.status(), "result");
  return WriteResult(*result, format);
}

int Jobs(const std::vector<std::string>&) {
  const int limit = absl::GetFlag(FLAGS_limit);
  if (limit <= 0) return UsageError("--limit must be > 0");
  int code = kExitOk;
  auto client = ConnectFromFlags(&code);
  if (client == nullptr) return code;
  v1::ListJobsResponse all;
  std::string token;
  while (all.jobs_size() < limit) {
    auto page =
        client->ListJobs(std::min(limit - all.jobs_size(), 1000), token);
    if (!page.ok()) return FailStatus(page.status(), "jobs");
    for (const Job& job : page->jobs()) *all.add_jobs() = job;
    token = page->next_page_token();
    if (token.empty() || page->jobs_size() == 0) break;
  }
  if (absl::GetFlag(FLAGS_json)) {
    std::cout << ToJson(all);
    return kExitOk;
  }
  std::cout << absl::StreamFormat("%-36s %-9s %-5s %-19s %s\n", "JOB", "STATE",
                                  "CHIP", "PROGRESS [ms]", "SUBMITTED");
  for (const Job& job : all.jobs()) {
    std::cout << absl::StreamFormat(
        "%-36s %-9s %-5s %-19s %s\n", job.job_id(), StateName(job.state()),
        job.has_chip_id() ? absl::StrCat(job.chip_id()) : "-",
        absl::StrFormat("%.3f/%.3f", job.progress_ms(), job.runtime_ms()),
        FormatTime(job.submit_time_unix_ms()));
  }
  return kExitOk;
}

int Chips(const std::vector<std::string>&) {
  int code = kExitOk;
  auto connection = ConnectFromFlags(&code);
  if (connection == nullptr) return code;
  auto chips = connection->ListChips();
  if (!chips.ok()) return FailStatus(chips.status(), "chips");
  if (absl::GetFlag(FLAGS_json)) {
    std::cout << ToJson(*chips);
    return kExitOk;
  }
  std::cout << absl::StreamFormat("%-5s %-5s %-7s %-9s %s\n", "CHIP", "STATE",
                                  "QUEUED", "STARTED", "CALIBRATION");
  for (const v1::ChipInfo& chip : chips->chips()) {
    std::string calibration = absl::AsciiStrToLower(
        absl::StripPrefix(v1::CalibrationState_Name(chip.calibration_state()),
                          "CALIBRATION_STATE_"));
    if (!chip.calibration_message().empty()) {
      absl::StrAppend(&calibration, " (", chip.calibration_message(), ")");
    }
    std::cout << absl::StreamFormat("%-5u %-5s %-7u %-9u %s\n", chip.chip_id(),
                                    chip.busy() ? "busy" : "idle",
                                    chip.queued_jobs(), chip.jobs_started(),
                                    calibration);
  }
  return kExitOk;
}

int Info(const std::vector<std::string>&) {
  int code = kExitOk;
  auto connection = ConnectFromFlags(&code);
  if (connection == nullptr) return code;
  auto info = connection->GetServerInfo();
  if (!info.ok()) return FailStatus(info.status(), "info");
  if (absl::GetFlag(FLAGS_json)) {
    std::cout << ToJson(*info);
    return kExitOk;
  }
  std::cout << "version:        " << info->version() << "\n"
            << "chip model:     " << info->chip_model() << "\n"
            << "chips:          " << info->num_chips() << "\n"
            << absl::StreamFormat("max runtime:    %g ms\n",
                                  info->max_runtime_ms())
            << "neuron parameters:\n"
            << absl::StreamFormat("  %-44s %-11s %-11s %-7s %s\n", "NAME",
                                  "KIND", "RANGE", "DEFAULT", "UNIT");
  for (const v1::ParameterInfo& p : info->neuron_parameters()) {
    std::cout << absl::StreamFormat(
        "  %-44s %-11s %-11s %-7d %s\n", p.name(), p.kind(),
        absl::StrCat(p.min(), "..", p.max()), p.default_value(), p.unit());
  }
  return kExitOk;
}

int GetCalibration(const std::vector<std::string>&) {
  int code = kExitOk;
  auto connection = ConnectFromFlags(&code);
  if (connection == nullptr) return code;
  std::optional<uint32_t> chip;
  if (absl::GetFlag(FLAGS_chip) >= 0) {
    chip = static_cast<uint32_t>(absl::GetFlag(FLAGS_chip));
  }
  auto calibration = connection->GetCalibration(chip);
  if (!calibration.ok()) return FailStatus(calibration.status(), "calibration");
  const std::string out = absl::GetFlag(FLAGS_out);
  if (!out.empty() && out != "-") {
    std::string data;
    if (absl::EndsWith(out, ".textproto") || absl::EndsWith(out, ".txtpb") ||
        absl::EndsWith(out, ".pbtxt")) {
      pb::TextFormat::PrintToString(*calibration, &data);
    } else {
      data = ToJson(*calibration, /*indent=*/false);
    }
    std::ofstream file(out, std::ios::binary | std::ios::trunc);
    file << data;
    file.close();
    if (!file) return Fail(kExitOther, absl::StrCat("cannot write ", out));
  } else if (absl::GetFlag(FLAGS_json) || out == "-") {
    std::cout << ToJson(*calibration, /*indent=*/out != "-");
  }
  if (absl::GetFlag(FLAGS_json) || out == "-") return kExitOk;
  const v1::CalibrationTargets& t = calibration->targets();
  std::cout << "chip:      " << calibration->chip_id() << "\n"
            << "emulator:  " << calibration->emulator_version() << "\n"
            << absl::StreamFormat(
                   "targets:   leak %g, reset %g, threshold %g [CADC LSB], "
                   "tau_mem %g us, tau_syn %g/%g us, refractory %g us\n",
                   t.leak(), t.reset(), t.threshold(), t.tau_mem_us(),
                   t.tau_syn_exc_us(), t.tau_syn_inh_us(),
                   t.refractory_time_us())
            << "circuits:  " << calibration->circuits_size() << " ("
            << calibration->num_failed() << " failed)\n";
  if (!calibration->warning().empty()) {
    std::cout << "warning:   " << calibration->warning() << "\n";
  }
  return kExitOk;
}

int Help(const std::vector<std::string>& args) {
  if (args.empty()) {
    std::cout << kUsage;
    return kExitOk;
  }
  auto it = Commands().find(args[0]);
  if (it == Commands().end()) {
    return UsageError(absl::StrCat("unknown command '", args[0], "'"));
  }
  std::cout << it->second.usage
            << "\nConnection flags: --address, --user, --token (see 'hxemu "
               "help'); exit codes: see 'hxemu help'.\n";
  return kExitOk;
}

// Checks every flag before absl parses them, so that mistakes exit with
// kExitUsage (absl itself would exit 1) and a command's foreign flags are
// refused. Sets *help if --help/-h was given (and removes it).
int CheckFlags(std::vector<char*>* argv, bool* help) {
  std::vector<char*> kept;
  std::string command;
  std::vector<std::pair<std::string, std::string>> given;  // name, value
  bool positional_only = false;
  for (size_t i = 0; i < argv->size(); ++i) {
    absl::string_view arg = (*argv)[i];
    if (i == 0 || positional_only || arg == "-" ||
        !absl::StartsWith(arg, "-")) {
      if (i > 0 && command.empty()) command = std::string(arg);
      kept.push_back((*argv)[i]);
      continue;
    }
    if (arg == "--") {
      positional_only = true;
      kept.push_back((*argv)[i]);
      continue;
    }
    if (arg == "--help" || arg == "-h" || arg == "-help" ||
        arg == "--helpfull") {
      *help = true;
      continue;
    }
    kept.push_back((*argv)[i]);
    absl::string_view body =
        absl::StripPrefix(absl::StripPrefix(arg, "-"), "-");
    std::string name(body.substr(0, body.find('=')));
    const bool has_value = body.find('=') != absl::string_view::npos;
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    if (flag == nullptr && absl::StartsWith(name, "no")) {
      absl::CommandLineFlag* negated =
          absl::FindCommandLineFlag(name.substr(2));
      if (negated != nullptr && negated->IsOfType<bool>() && !has_value) {
        given.emplace_back(name.substr(2), "false");
        continue;
      }
    }
    if (flag == nullptr) {
      return UsageError(absl::StrCat("unknown flag --", name));
    }
    std::string value;
    if (has_value) {
      value = std::string(body.substr(body.find('=') + 1));
    } else if (flag->IsOfType<bool>()) {
      value = "true";
    } else if (i + 1 < argv->size()) {
      value = (*argv)[++i];
      kept.push_back((*argv)[i]);
    } else {
      return UsageError(absl::StrCat("flag --", name, " needs a value"));
    }
    given.emplace_back(name, value);
  }
  *argv = kept;
  if (*help) return kExitOk;
  auto it = Commands().find(command);
  for (const auto& [name, value] : given) {
    const bool allowed =
        ConnectionFlags().contains(name) ||
        (it != Commands().end() && it->second.flags.contains(name));
    if (!allowed) {
      if (absl::StartsWith(name, "help") || name == "version" ||
          name == "flagfile" || name == "fromenv" || name == "tryfromenv" ||
          name == "undefok") {
        return UsageError(absl::StrCat("flag --", name, " is not supported"));
      }
      return UsageError(absl::StrCat("flag --", name, " does not apply to '",
                                     command.empty() ? "hxemu" : command, "'"));
    }
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    std::string error;
    // Parsing into the flag here is harmless: absl parses the same value
    // again below.
    if (!flag->ParseFrom(value, &error)) {
      return UsageError(
          absl::StrCat("bad value '", value, "' for --", name, ": ", error));
    }
  }
  return kExitOk;
}

int Main(int argc, char** argv) {
  absl::SetProgramUsageMessage(kUsage);
  std::vector<char*> args(argv, argv + argc);
  bool help = false;
  if (int code = CheckFlags(&args, &help); code != kExitOk) return code;
  args.push_back(nullptr);
  std::vector<char*> positional =
      absl::ParseCommandLine(static_cast<int>(args.size() - 1), args.data());
  positional.erase(positional.begin());  // argv[0]
  if (positional.empty()) {
    if (help) return Help({});
    std::cerr << kUsage;
    return kExitUsage;
  }
  const std::string command = positional[0];
  std::vector<std::string> rest(positional.begin() + 1, positional.end());
  if (help) {
    if (command == "help") {
      return Help(rest.empty() ? std::vector<std::string>{"help"} : rest);
    }
    return Help({command});
  }
  auto it = Commands().find(command);
  if (it == Commands().end()) {
    return UsageError(absl::StrCat("unknown command '", command, "'"));
  }
  if (command == "help") {
    if (rest.size() > 1) return UsageError("help takes at most one command");
    return Help(rest);
  }
  if (static_cast<int>(rest.size()) != it->second.num_args) {
    std::cerr << it->second.usage;
    return UsageError(absl::StrCat(
        "'", command, "' takes ", it->second.num_args, " argument",
        it->second.num_args == 1 ? "" : "s", ", ", rest.size(), " given"));
  }
  if (command == "submit") return Submit(rest);
  if (command == "status") return Status(rest);
  if (command == "watch") return Watch(rest);
  if (command == "cancel") return Cancel(rest);
  if (command == "result") return GetResult(rest);
  if (command == "jobs") return Jobs(rest);
  if (command == "chips") return Chips(rest);
  if (command == "calibration") return GetCalibration(rest);
  return Info(rest);
}

}  // namespace
}  // namespace hxemu::cli

int main(int argc, char** argv) { return hxemu::cli::Main(argc, argv); }

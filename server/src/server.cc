#include "hxemu/server/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>
#include <prometheus/exposer.h>
#include <prometheus/registry.h>

#include <algorithm>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "experiment_service.h"
#include "hxemu/emulator/parameters.h"
#include "hxemu/scheduler/job_store.h"
#include "hxemu/scheduler/scheduler.h"
#include "metrics.h"

namespace hxemu::server {

struct Server::Impl {
  ServerOptions options;
  std::string address;
  int port = 0;
  // Declared before the scheduler: jobs' done callbacks update the metrics
  // until the scheduler is gone.
  std::shared_ptr<prometheus::Registry> registry;
  std::unique_ptr<ServerMetrics> metrics;
  std::unique_ptr<prometheus::Exposer> exposer;
  std::unique_ptr<scheduler::Scheduler> scheduler;
  // Before the service, which points to it.
  std::unique_ptr<CalibrationStore> calibrations;
  std::unique_ptr<ExperimentService> service;
  std::shared_ptr<SchedulerCollector> collector;
  std::unique_ptr<grpc::Server> grpc_server;

  absl::Mutex mu;
  bool shut_down ABSL_GUARDED_BY(mu) = false;
};

namespace {

absl::Status CheckOptions(const ServerOptions& options) {
  if (options.num_chips < 1 || options.num_chips > 256) {
    return absl::InvalidArgumentError(absl::StrCat(
        "num_chips: ", options.num_chips, " is out of range 1..256"));
  }
  if (options.max_queued_jobs < 1) {
    return absl::InvalidArgumentError("max_queued_jobs: must be >= 1");
  }
  if (options.max_queued_jobs_per_user < 1) {
    return absl::InvalidArgumentError("max_queued_jobs_per_user: must be >= 1");
  }
  if (options.result_ttl <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("result_ttl_s: must be > 0");
  }
  if (options.max_result_bytes < 1) {
    return absl::InvalidArgumentError("max_result_bytes: must be >= 1");
  }
  if (!(options.limits.max_runtime_ms > 0)) {
    return absl::InvalidArgumentError("max_runtime_ms: must be > 0");
  }
  if (options.max_request_bytes < 1024) {
    return absl::InvalidArgumentError("max_request_bytes: must be >= 1024");
  }
  if (options.limits.max_madc_samples < 0 ||
      options.limits.max_recorded_spikes < 0 ||
      options.limits.max_input_spikes < 0 ||
      options.limits.max_source_neurons < 0) {
    return absl::InvalidArgumentError(
        "max_madc_samples, max_recorded_spikes, max_input_spikes, "
        "max_source_neurons: must be >= 0");
  }
  if (options.user_time_slice < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("user_time_slice_ms: must be >= 0");
  }
  if (options.usage_half_life < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("usage_half_life_s: must be >= 0");
  }
  if (options.job_record_ttl <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("job_record_ttl_s: must be > 0");
  }
  if (options.max_job_records < 1) {
    return absl::InvalidArgumentError("max_job_records: must be >= 1");
  }
  for (const auto& [user, weight] : options.user_weights) {
    if (weight < 1 || weight > 1000) {
      return absl::InvalidArgumentError(
          absl::StrCat("user_weights: weight ", weight, " of user '", user,
                       "' is out of range 1..1000"));
    }
  }
  return absl::OkStatus();
}

// The whole content of a PEM file named by flag `flag`.
absl::StatusOr<std::string> ReadPemFile(const char* flag,
                                        const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, ": cannot read '", path, "'"));
  }
  std::string pem((std::istreambuf_iterator<char>(in)),
                  std::istreambuf_iterator<char>());
  if (pem.find("-----BEGIN ") == std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, ": '", path, "' is not a PEM file"));
  }
  return pem;
}

// Insecure, or TLS with the configured certificate and key.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeCredentials(
    const ServerOptions& options) {
  if (options.tls_cert_file.empty() && options.tls_key_file.empty()) {
    return grpc::InsecureServerCredentials();
  }
  if (options.tls_cert_file.empty() || options.tls_key_file.empty()) {
    return absl::InvalidArgumentError(
        "tls_cert_file, tls_key_file: set both (TLS) or neither (insecure)");
  }
  absl::StatusOr<std::string> cert =
      ReadPemFile("tls_cert_file", options.tls_cert_file);
  if (!cert.ok()) return cert.status();
  absl::StatusOr<std::string> key =
      ReadPemFile("tls_key_file", options.tls_key_file);
  if (!key.ok()) return key.status();
  grpc::SslServerCredentialsOptions ssl;
  ssl.pem_key_cert_pairs.push_back({*std::move(key), *std::move(cert)});
  return grpc::SslServerCredentials(ssl);
}

// "host:port" with the port replaced by the one actually bound.
std::string WithPort(const std::string& listen_address, int port) {
  size_t colon = listen_address.rfind(':');
  std::string host = colon == std::string::npos
                         ? listen_address
                         : listen_address.substr(0, colon);
  return absl::StrCat(host, ":", port);
}

}  // namespace

absl::StatusOr<std::unique_ptr<Server>> Server::Start(
    const ServerOptions& options) {
  if (absl::Status s = CheckOptions(options); !s.ok()) return s;
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials =
      MakeCredentials(options);
  if (!credentials.ok()) return credentials.status();
  auto impl = std::make_unique<Impl>();
  impl->options = options;

  impl->registry = std::make_shared<prometheus::Registry>();
  impl->metrics = std::make_unique<ServerMetrics>(*impl->registry);
  if (!options.metrics_address.empty()) {
    try {
      impl->exposer =
          std::make_unique<prometheus::Exposer>(options.metrics_address);
    } catch (const std::exception& e) {
      return absl::UnavailableError(
          absl::StrCat("metrics_address: cannot serve metrics on '",
                       options.metrics_address, "': ", e.what()));
    }
    impl->exposer->RegisterCollectable(impl->registry);
  }

  scheduler::Options scheduler_options;
  scheduler_options.chip_ids.clear();
  for (int i = 0; i < options.num_chips; ++i) {
    scheduler_options.chip_ids.push_back(static_cast<uint32_t>(i));
  }
  scheduler_options.max_queued_jobs = options.max_queued_jobs;
  scheduler_options.max_queued_jobs_per_user = options.max_queued_jobs_per_user;
  scheduler_options.result_ttl = options.result_ttl;
  scheduler_options.max_result_bytes = options.max_result_bytes;
  scheduler_options.user_weights = options.user_weights;
  scheduler_options.user_time_slice = options.user_time_slice;
  // 0 = no decay (the scheduler's InfiniteDuration).
  scheduler_options.usage_half_life =
      options.usage_half_life == absl::ZeroDuration() ? absl::InfiniteDuration()
                                                      : options.usage_half_life;
  scheduler_options.job_record_ttl = options.job_record_ttl;
  scheduler_options.max_job_records = options.max_job_records;
  if (!options.state_dir.empty()) {
    absl::StatusOr<std::unique_ptr<scheduler::FileJobStore>> store =
        scheduler::FileJobStore::Open(options.state_dir);
    if (!store.ok()) return store.status();
    scheduler_options.store = std::move(*store);
  }
  const emulator::ExperimentLimits limits = options.limits;
  ServerMetrics* const metrics = impl->metrics.get();
  impl->scheduler = std::make_unique<scheduler::Scheduler>(
      scheduler_options,
      [limits, metrics](uint32_t chip_id) -> scheduler::ChipRunner {
        auto chip = std::make_shared<emulator::Chip>(chip_id);
        return [chip, limits, metrics](const scheduler::WorkItem& item) {
          emulator::RunPhases phases;
          emulator::RunControl control;
          control.cancel_requested = &item.cancel_requested;
          control.on_progress = item.report_progress;
          control.phases = &phases;
          absl::StatusOr<hxemu::v1::Result> result =
              chip->Run(item.experiment, limits, control);
          metrics->RunPhasesObserved(phases);
          return result;
        };
      });
  impl->service = std::make_unique<ExperimentService>(
      impl->scheduler.get(), impl->metrics.get(), options);
  CalibrationStore::Options calibration_options;
  calibration_options.num_chips = options.num_chips;
  calibration_options.cache_dir = options.calibration_cache_dir;
  calibration_options.calibrate_at_start = options.calibrate_at_start;
  calibration_options.circuits = options.calibration_circuits;
  impl->calibrations = std::make_unique<CalibrationStore>(calibration_options);
  impl->service->set_calibration_store(impl->calibrations.get());
  if (impl->exposer != nullptr) {
    impl->collector = std::make_shared<SchedulerCollector>(
        impl->scheduler.get(), HXEMU_VERSION);
    impl->exposer->RegisterCollectable(impl->collector);
  }

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.listen_address, *credentials, &impl->port);
  builder.SetMaxReceiveMessageSize(options.max_request_bytes);
  builder.RegisterService(impl->service.get());
  impl->grpc_server = builder.BuildAndStart();
  if (impl->grpc_server == nullptr || impl->port == 0) {
    return absl::UnavailableError(absl::StrCat(
        "listen_address: cannot listen on '", options.listen_address, "'"));
  }
  impl->address = WithPort(options.listen_address, impl->port);
  impl->grpc_server->GetHealthCheckService()->SetServingStatus(true);
  return std::unique_ptr<Server>(new Server(std::move(impl)));
}

Server::Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Server::~Server() { Shutdown(absl::ZeroDuration()); }

const std::string& Server::address() const { return impl_->address; }
int Server::port() const { return impl_->port; }
int Server::metrics_port() const {
  if (impl_->exposer == nullptr) return 0;
  std::vector<int> ports = impl_->exposer->GetListeningPorts();
  return ports.empty() ? 0 : ports.front();
}

void Server::Shutdown(absl::Duration grace) {
  {
    absl::MutexLock lock(&impl_->mu);
    if (impl_->shut_down) return;
    impl_->shut_down = true;
  }
  const absl::Time end = absl::Now() + grace;
  impl_->grpc_server->GetHealthCheckService()->SetServingStatus(false);
  // Refuse new jobs, hand back the queued ones, let the running ones finish
  // (or stop them at `end`). Calls keep being served meanwhile, so clients
  // see their jobs end and can fetch results.
  impl_->scheduler->Drain(end);
  // Answers the GetCalibration calls still waiting (UNAVAILABLE), so that
  // no call keeps the gRPC shutdown waiting.
  impl_->calibrations->Stop();
  impl_->grpc_server->Shutdown(
      absl::ToChronoTime(std::max(end, absl::Now() + absl::Milliseconds(100))));
  // No RPC can reach the scheduler any more; the metrics endpoint must not
  // read it either.
  if (impl_->exposer != nullptr && impl_->collector != nullptr) {
    impl_->exposer->RemoveCollectable(impl_->collector);
  }
  impl_->scheduler.reset();
}

void Server::Wait() { impl_->grpc_server->Wait(); }

namespace {

std::string JsonString(std::string_view text) {
  std::string out = "\"";
  for (char c : text) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      default:
        out += c;
    }
  }
  out += '"';
  return out;
}

}  // namespace

absl::StatusOr<absl::flat_hash_map<std::string, std::string>> ReadTokenFile(
    const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    return absl::NotFoundError(
        absl::StrCat("auth_token_file: cannot read '", path, "'"));
  }
  absl::flat_hash_map<std::string, std::string> tokens;
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    if (size_t hash = line.find('#'); hash != std::string::npos) {
      line.resize(hash);
    }
    std::vector<std::string> words =
        absl::StrSplit(line, absl::ByAnyChar(" \t\r"), absl::SkipEmpty());
    if (words.empty()) continue;
    const std::string where =
        absl::StrCat("auth_token_file: ", path, ":", number, ": ");
    if (words.size() != 2) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, "expected 'TOKEN USER', found ", words.size(), " words"));
    }
    if (words[0].size() < 16) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, "token shorter than 16 characters"));
    }
    if (!IsValidUserName(words[1])) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, "'", words[1],
          "' is not a valid user name (1..64 characters of A-Z a-z 0-9 . _ "
          "- @)"));
    }
    if (!tokens.emplace(words[0], words[1]).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, "token listed twice"));
    }
  }
  if (tokens.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("auth_token_file: '", path, "' lists no tokens"));
  }
  return tokens;
}

std::string NeuronParameterTableJson() {
  std::vector<std::string> entries;
  for (const emulator::NeuronParameterInfo& p :
       emulator::NeuronParameterTable()) {
    entries.push_back(absl::StrCat(
        "  {\"name\": ", JsonString(p.name),
        ", \"kind\": ", JsonString(emulator::ParameterKindName(p.kind)),
        ", \"min\": ", p.min, ", \"max\": ", p.max,
        ", \"default\": ", p.default_value, ", \"unit\": ", JsonString(p.unit),
        ", \"description\": ", JsonString(p.description), "}"));
  }
  return absl::StrCat("[\n", absl::StrJoin(entries, ",\n"), "\n]\n");
}

}  // namespace hxemu::server

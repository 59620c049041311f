#include "hxemu/client/client.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"

namespace hxemu::client {
namespace {

template <typename Response>
absl::StatusOr<Response> Finish(absl::Status status, Response response) {
  if (!status.ok()) return status;
  return response;
}

std::shared_ptr<grpc::ChannelCredentials> Credentials(const TlsOptions& tls) {
  if (!tls.enabled) return grpc::InsecureChannelCredentials();
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = tls.root_certs_pem;
  ssl.pem_cert_chain = tls.client_cert_pem;
  ssl.pem_private_key = tls.client_key_pem;
  return grpc::SslCredentials(ssl);
}

}  // namespace

bool IsTerminal(hxemu::v1::JobState state) {
  return state == hxemu::v1::JOB_STATE_SUCCEEDED ||
         state == hxemu::v1::JOB_STATE_FAILED ||
         state == hxemu::v1::JOB_STATE_CANCELLED ||
         state == hxemu::v1::JOB_STATE_EXPIRED;
}

absl::Status JobOutcome(const hxemu::v1::Job& job) {
  const std::string what = absl::StrCat("job ", job.job_id(), ": ");
  switch (job.state()) {
    case hxemu::v1::JOB_STATE_SUCCEEDED:
      return absl::OkStatus();
    case hxemu::v1::JOB_STATE_FAILED: {
      auto code = static_cast<absl::StatusCode>(job.error().code());
      if (code == absl::StatusCode::kOk) code = absl::StatusCode::kUnknown;
      return absl::Status(code, absl::StrCat(what, job.error().message()));
    }
    case hxemu::v1::JOB_STATE_CANCELLED:
      return absl::CancelledError(absl::StrCat(what, job.state_reason()));
    case hxemu::v1::JOB_STATE_EXPIRED:
      return absl::DeadlineExceededError(
          absl::StrCat(what, job.state_reason()));
    default:
      return absl::FailedPreconditionError(
          absl::StrCat(what, "has not ended (", job.state_reason(), ")"));
  }
}

std::unique_ptr<Client> Client::Connect(const ConnectOptions& options) {
  return std::unique_ptr<Client>(new Client(options));
}

Client::Client(const ConnectOptions& options) : options_(options) {
  grpc::ChannelArguments args;
  // Results arrive in chunks of about 1 MiB; this only lifts gRPC's 4 MiB
  // default for servers that send larger ones.
  args.SetMaxReceiveMessageSize(std::numeric_limits<int>::max());
  if (!options.tls.server_name_override.empty()) {
    args.SetSslTargetNameOverride(options.tls.server_name_override);
  }
  stub_ = hxemu::v1::ExperimentService::NewStub(grpc::CreateCustomChannel(
      options.address, Credentials(options.tls), args));
}

absl::Status Client::FromGrpc(const grpc::Status& status) const {
  if (status.ok()) return absl::OkStatus();
  std::string message = status.error_message();
  if (status.error_code() == grpc::StatusCode::UNAVAILABLE) {
    message = absl::StrCat("cannot reach the hxemu server at ",
                           options_.address, ": ", message);
  }
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      message);
}

void Client::Prepare(grpc::ClientContext* context,
                     absl::Duration timeout) const {
  if (!options_.user.empty()) context->AddMetadata("hxemu-user", options_.user);
  if (!options_.token.empty()) {
    context->AddMetadata("authorization",
                         absl::StrCat("Bearer ", options_.token));
  }
  if (timeout != absl::InfiniteDuration()) {
    context->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  }
}

absl::StatusOr<hxemu::v1::Job> Client::Submit(
    const hxemu::v1::Experiment& experiment, const std::string& request_id,
    absl::Duration max_wall_time) {
  grpc::ClientContext context;
  Prepare(&context, options_.call_timeout);
  hxemu::v1::SubmitJobRequest request;
  *request.mutable_experiment() = experiment;
  request.set_request_id(request_id);
  if (max_wall_time != absl::InfiniteDuration()) {
    request.set_max_wall_time_s(absl::ToDoubleSeconds(max_wall_time));
  }
  hxemu::v1::Job job;
  grpc::Status status = stub_->SubmitJob(&context, request, &job);
  return Finish(FromGrpc(status), std::move(job));
}

absl::StatusOr<hxemu::v1::Job> Client::GetJob(const std::string& job_id) {
  grpc::ClientContext context;
  Prepare(&context, options_.call_timeout);
  hxemu::v1::GetJobRequest request;
  request.set_job_id(job_id);
  hxemu::v1::Job job;
  grpc::Status status = stub_->GetJob(&context, request, &job);
  return Finish(FromGrpc(status), std::move(job));
}

absl::StatusOr<hxemu::v1::Job> Client::WaitJob(const std::string& job_id,
                                               absl::Duration timeout) {
  // Long waits are split into calls of at most kWaitSlice, so that no proxy
  // or load balancer sees a call idle for hours.
  constexpr absl::Duration kWaitSlice = absl::Seconds(60);
  const absl::Time deadline = absl::Now() + timeout;
  hxemu::v1::WaitJobRequest request;
  request.set_job_id(job_id);
  while (true) {
    const absl::Duration remaining = deadline - absl::Now();
    grpc::ClientContext context;
    Prepare(&context, std::min(remaining, kWaitSlice));
    hxemu::v1::Job job;
    grpc::Status status = stub_->WaitJob(&context, request, &job);
    const bool slice_ended =
        status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED &&
        remaining > kWaitSlice;
    if (!slice_ended) return Finish(FromGrpc(status), std::move(job));
  }
}

absl::StatusOr<hxemu::v1::Job> Client::WatchJob(const std::string& job_id,
                                                const JobCallback& on_update,
                                                absl::Duration timeout) {
  grpc::ClientContext context;
  Prepare(&context, timeout);
  hxemu::v1::WatchJobRequest request;
  request.set_job_id(job_id);
  std::unique_ptr<grpc::ClientReader<hxemu::v1::Job>> reader =
      stub_->WatchJob(&context, request);
  hxemu::v1::Job job;
  hxemu::v1::Job last;
  while (reader->Read(&job)) {
    if (on_update) on_update(job);
    last = job;
  }
  absl::Status status = FromGrpc(reader->Finish());
  if (status.ok() && !IsTerminal(last.state())) {
    // The server ends the stream after the terminal state; an earlier end
    // (e.g. the server shutting down) is not an answer.
    status = absl::UnavailableError(absl::StrCat(
        "WatchJob: the stream of job ", job_id, " ended before the job did"));
  }
  return Finish(std::move(status), std::move(last));
}

absl::StatusOr<hxemu::v1::Job> Client::CancelJob(const std::string& job_id) {
  grpc::ClientContext context;
  Prepare(&context, options_.call_timeout);
  hxemu::v1::CancelJobRequest request;
  request.set_job_id(job_id);
  hxemu::v1::Job job;
  grpc::Status status = stub_->CancelJob(&context, request, &job);
  return Finish(FromGrpc(status), std::move(job));
}

absl::StatusOr<hxemu::v1::Result> Client::GetResult(const std::string& job_id) {
  grpc::ClientContext context;
  Prepare(&context, options_.result_timeout);
  hxemu::v1::GetResultRequest request;
  request.set_job_id(job_id);
  std::unique_ptr<grpc::ClientReader<hxemu::v1::ResultChunk>> reader =
      stub_->GetResult(&context, request);
  hxemu::v1::Result result;
  hxemu::v1::ResultChunk chunk;
  while (reader->Read(&chunk)) MergeResultChunk(chunk.result(), &result);
  grpc::Status status = reader->Finish();
  return Finish(FromGrpc(status), std::move(result));
}

absl::StatusOr<RunResult> Client::FetchResult(const std::string& job_id) {
  absl::StatusOr<hxemu::v1::Result> result = GetResult(job_id);
  if (!result.ok()) return result.status();
  return ToRunResult(*result);
}

absl::StatusOr<RunResult> Client::Run(const hxemu::v1::Experiment& experiment,
                                      const JobCallback& on_update,
                                      absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  absl::StatusOr<hxemu::v1::Job> job = Submit(experiment);
  if (!job.ok()) return job.status();
  absl::StatusOr<hxemu::v1::Job> done =
      WatchJob(job->job_id(), on_update, deadline - absl::Now());
  if (!done.ok()) return done.status();
  if (absl::Status outcome = JobOutcome(*done); !outcome.ok()) return outcome;
  return FetchResult(job->job_id());
}

absl::StatusOr<hxemu::v1::ListJobsResponse> Client::ListJobs(
    int page_size, const std::string& page_token) {
  grpc::ClientContext context;
  Prepare(&context, options_.call_timeout);
  hxemu::v1::ListJobsRequest request;
  request.set_page_size(page_size);
  request.set_page_token(page_token);
  hxemu::v1::ListJobsResponse response;
  grpc::Status status = stub_->ListJobs(&context, request, &response);
  return Finish(FromGrpc(status), std::move(response));
}

absl::StatusOr<hxemu::v1::ListChipsResponse> Client::ListChips() {
  grpc::ClientContext context;
  Prepare(&context, options_.call_timeout);
  hxemu::v1::ListChipsResponse response;
  grpc::Status status =
      stub_->ListChips(&context, hxemu::v1::ListChipsRequest(), &response);
  return Finish(FromGrpc(status), std::move(response));
}

absl::StatusOr<hxemu::v1::ServerInfo> Client::GetServerInfo() {
  grpc::ClientContext context;
  Prepare(&context, options_.call_timeout);
  hxemu::v1::ServerInfo info;
  grpc::Status status =
      stub_->GetServerInfo(&context, hxemu::v1::GetServerInfoRequest(), &info);
  return Finish(FromGrpc(status), std::move(info));
}

absl::StatusOr<hxemu::v1::Calibration> Client::GetCalibration(
    std::optional<uint32_t> chip_id,
    const hxemu::v1::CalibrationTargets& targets, absl::Duration timeout) {
  grpc::ClientContext context;
  Prepare(&context, timeout);
  hxemu::v1::GetCalibrationRequest request;
  if (chip_id.has_value()) request.set_chip_id(*chip_id);
  *request.mutable_targets() = targets;
  hxemu::v1::Calibration calibration;
  grpc::Status status = stub_->GetCalibration(&context, request, &calibration);
  return Finish(FromGrpc(status), std::move(calibration));
}

void MergeResultChunk(const hxemu::v1::Result& chunk,
                      hxemu::v1::Result* result) {
  const bool first =
      result->runtime_ms() == 0 && result->population_labels_size() == 0 &&
      result->spike_trains_size() == 0 && result->traces_size() == 0;
  if (first) {
    // The first chunk carries every field but the bulk lists (spike trains,
    // traces, CADC reads), which are merged below.
    *result = chunk;
    result->clear_spike_trains();
    result->clear_traces();
    result->clear_cadc_reads();
  }
  for (const hxemu::v1::CadcRead& read : chunk.cadc_reads()) {
    *result->add_cadc_reads() = read;
  }
  // The server sends the pieces of one train or trace back to back, so the
  // match is almost always the last entry: search backwards.
  for (const hxemu::v1::SpikeTrain& piece : chunk.spike_trains()) {
    hxemu::v1::SpikeTrain* match = nullptr;
    for (int i = result->spike_trains_size() - 1; i >= 0 && !match; --i) {
      hxemu::v1::SpikeTrain* train = result->mutable_spike_trains(i);
      if (train->population() == piece.population() &&
          train->neuron() == piece.neuron()) {
        match = train;
      }
    }
    if (match != nullptr) {
      match->mutable_times_ticks()->MergeFrom(piece.times_ticks());
    } else {
      *result->add_spike_trains() = piece;
    }
  }
  for (const hxemu::v1::Trace& piece : chunk.traces()) {
    hxemu::v1::Trace* match = nullptr;
    for (int i = result->traces_size() - 1; i >= 0 && !match; --i) {
      hxemu::v1::Trace* trace = result->mutable_traces(i);
      if (trace->population() == piece.population() &&
          trace->neuron() == piece.neuron() &&
          trace->observable() == piece.observable()) {
        match = trace;
      }
    }
    if (match != nullptr) {
      match->mutable_times_ticks()->MergeFrom(piece.times_ticks());
      match->mutable_codes()->MergeFrom(piece.codes());
    } else {
      *result->add_traces() = piece;
    }
  }
}

}  // namespace hxemu::client

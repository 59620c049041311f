#include "hxemu/client/client.h"

#include <grpcpp/grpcpp.h>

#include <limits>
#include <utility>

namespace hxemu::client {
namespace {

absl::Status FromGrpc(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      status.error_message());
}

template <typename Response>
absl::StatusOr<Response> Finish(const grpc::Status& status, Response response) {
  if (!status.ok()) return FromGrpc(status);
  return response;
}

}  // namespace

std::unique_ptr<Client> Client::Connect(const ConnectOptions& options) {
  return std::unique_ptr<Client>(new Client(options));
}

Client::Client(const ConnectOptions& options) : options_(options) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(std::numeric_limits<int>::max());
  stub_ = hxemu::v1::ExperimentService::NewStub(grpc::CreateCustomChannel(
      options.address, grpc::InsecureChannelCredentials(), args));
}

void Client::Prepare(grpc::ClientContext* context,
                     absl::Duration timeout) const {
  if (!options_.user.empty()) context->AddMetadata("hxemu-user", options_.user);
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
  return Finish(status, std::move(job));
}

absl::StatusOr<hxemu::v1::Job> Client::GetJob(const std::string& job_id) {
  grpc::ClientContext context;
  Prepare(&context, options_.call_timeout);
  hxemu::v1::GetJobRequest request;
  request.set_job_id(job_id);
  hxemu::v1::Job job;
  grpc::Status status = stub_->GetJob(&context, request, &job);
  return Finish(status, std::move(job));
}

absl::StatusOr<hxemu::v1::Job> Client::WaitJob(const std::string& job_id,
                                               absl::Duration timeout) {
  grpc::ClientContext context;
  Prepare(&context, timeout);
  hxemu::v1::WaitJobRequest request;
  request.set_job_id(job_id);
  hxemu::v1::Job job;
  grpc::Status status = stub_->WaitJob(&context, request, &job);
  return Finish(status, std::move(job));
}

absl::StatusOr<hxemu::v1::Job> Client::WatchJob(
    const std::string& job_id,
    const std::function<void(const hxemu::v1::Job&)>& on_update,
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
  grpc::Status status = reader->Finish();
  return Finish(status, std::move(last));
}

absl::StatusOr<hxemu::v1::Job> Client::CancelJob(const std::string& job_id) {
  grpc::ClientContext context;
  Prepare(&context, options_.call_timeout);
  hxemu::v1::CancelJobRequest request;
  request.set_job_id(job_id);
  hxemu::v1::Job job;
  grpc::Status status = stub_->CancelJob(&context, request, &job);
  return Finish(status, std::move(job));
}

absl::StatusOr<hxemu::v1::Result> Client::GetResult(const std::string& job_id) {
  grpc::ClientContext context;
  Prepare(&context, options_.call_timeout);
  hxemu::v1::GetResultRequest request;
  request.set_job_id(job_id);
  std::unique_ptr<grpc::ClientReader<hxemu::v1::ResultChunk>> reader =
      stub_->GetResult(&context, request);
  hxemu::v1::Result result;
  hxemu::v1::ResultChunk chunk;
  while (reader->Read(&chunk)) MergeResultChunk(chunk.result(), &result);
  grpc::Status status = reader->Finish();
  return Finish(status, std::move(result));
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
  return Finish(status, std::move(response));
}

absl::StatusOr<hxemu::v1::ListChipsResponse> Client::ListChips() {
  grpc::ClientContext context;
  Prepare(&context, options_.call_timeout);
  hxemu::v1::ListChipsResponse response;
  grpc::Status status =
      stub_->ListChips(&context, hxemu::v1::ListChipsRequest(), &response);
  return Finish(status, std::move(response));
}

absl::StatusOr<hxemu::v1::ServerInfo> Client::GetServerInfo() {
  grpc::ClientContext context;
  Prepare(&context, options_.call_timeout);
  hxemu::v1::ServerInfo info;
  grpc::Status status =
      stub_->GetServerInfo(&context, hxemu::v1::GetServerInfoRequest(), &info);
  return Finish(status, std::move(info));
}

void MergeResultChunk(const hxemu::v1::Result& chunk,
                      hxemu::v1::Result* result) {
  result->set_chip_id(chunk.chip_id());
  result->set_runtime_ms(chunk.runtime_ms());
  if (result->population_labels_size() == 0) {
    *result->mutable_population_labels() = chunk.population_labels();
  }
  for (const hxemu::v1::SpikeTrain& piece : chunk.spike_trains()) {
    int n = result->spike_trains_size();
    if (n > 0 &&
        result->spike_trains(n - 1).population() == piece.population() &&
        result->spike_trains(n - 1).neuron() == piece.neuron()) {
      result->mutable_spike_trains(n - 1)->mutable_times_ticks()->MergeFrom(
          piece.times_ticks());
    } else {
      *result->add_spike_trains() = piece;
    }
  }
  for (const hxemu::v1::Trace& piece : chunk.traces()) {
    int n = result->traces_size();
    if (n > 0 && result->traces(n - 1).population() == piece.population() &&
        result->traces(n - 1).neuron() == piece.neuron() &&
        result->traces(n - 1).observable() == piece.observable()) {
      hxemu::v1::Trace* last = result->mutable_traces(n - 1);
      last->mutable_times_ticks()->MergeFrom(piece.times_ticks());
      last->mutable_codes()->MergeFrom(piece.codes());
    } else {
      *result->add_traces() = piece;
    }
  }
}

}  // namespace hxemu::client

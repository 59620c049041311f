#include "experiment_service.h"

#include <algorithm>
#include <functional>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "hxemu/calibration/apply.h"
#include "hxemu/emulator/parameters.h"
#include "status_mapping.h"

namespace hxemu::server {
namespace {

using ::hxemu::scheduler::JobState;
using ::hxemu::scheduler::JobView;

constexpr size_t kMaxUserNameLength = 64;
constexpr size_t kMaxIdLength = 128;
// Back-off a client should wait before retrying a refused submit [ms]
// (gRPC's retry policy honours it as server push-back).
constexpr char kRetryPushbackMs[] = "1000";
// Longest per-job deadline a client may ask for [s]: 30 days.
constexpr double kMaxWallTimeS = 30 * 24 * 3600;
constexpr int kMaxPageSize = 1000;

hxemu::v1::JobReason ReasonToProto(scheduler::Reason reason) {
  using scheduler::Reason;
  switch (reason) {
    case Reason::kWaitingForChip:
      return hxemu::v1::JOB_REASON_WAITING_FOR_CHIP;
    case Reason::kBehindOwnJobs:
      return hxemu::v1::JOB_REASON_BEHIND_OWN_JOBS;
    case Reason::kBehindOtherUsers:
      return hxemu::v1::JOB_REASON_BEHIND_OTHER_USERS;
    case Reason::kWaitingForPinnedChip:
      return hxemu::v1::JOB_REASON_WAITING_FOR_PINNED_CHIP;
    case Reason::kRunning:
      return hxemu::v1::JOB_REASON_RUNNING;
    case Reason::kCancelRequested:
      return hxemu::v1::JOB_REASON_CANCEL_REQUESTED;
    case Reason::kSucceeded:
      return hxemu::v1::JOB_REASON_SUCCEEDED;
    case Reason::kFailed:
      return hxemu::v1::JOB_REASON_FAILED;
    case Reason::kCancelledByUser:
      return hxemu::v1::JOB_REASON_CANCELLED_BY_USER;
    case Reason::kCancelledByShutdown:
      return hxemu::v1::JOB_REASON_CANCELLED_BY_SHUTDOWN;
    case Reason::kExpiredInQueue:
      return hxemu::v1::JOB_REASON_EXPIRED_IN_QUEUE;
    case Reason::kExpiredWhileRunning:
      return hxemu::v1::JOB_REASON_EXPIRED_WHILE_RUNNING;
  }
  return hxemu::v1::JOB_REASON_UNSPECIFIED;
}

hxemu::v1::JobState StateToProto(JobState state) {
  switch (state) {
    case JobState::kQueued:
      return hxemu::v1::JOB_STATE_QUEUED;
    case JobState::kRunning:
      return hxemu::v1::JOB_STATE_RUNNING;
    case JobState::kSucceeded:
      return hxemu::v1::JOB_STATE_SUCCEEDED;
    case JobState::kFailed:
      return hxemu::v1::JOB_STATE_FAILED;
    case JobState::kCancelled:
      return hxemu::v1::JOB_STATE_CANCELLED;
    case JobState::kExpired:
      return hxemu::v1::JOB_STATE_EXPIRED;
  }
  return hxemu::v1::JOB_STATE_UNSPECIFIED;
}

int64_t UnixMillisOrZero(absl::Time t) {
  return t == absl::InfinitePast() || t == absl::InfiniteFuture()
             ? 0
             : absl::ToUnixMillis(t);
}

uint64_t Fingerprint(std::string_view bytes) {
  // FNV-1a, 64 bit: stable across runs (unlike std::hash), cheap enough
  // for request sizes, and 0 is mapped away (0 = "no key").
  uint64_t h = 14695981039346656037ull;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h == 0 ? 1 : h;
}

bool ValidUserName(std::string_view user) {
  if (user.empty() || user.size() > kMaxUserNameLength) return false;
  return std::all_of(user.begin(), user.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-' ||
           c == '@';
  });
}

// The calling user from the request metadata; "anonymous" when absent.
absl::StatusOr<std::string> UserFromMetadata(
    const grpc::CallbackServerContext& context) {
  const auto& metadata = context.client_metadata();
  auto it = metadata.find(kUserMetadataKey);
  if (it == metadata.end()) return std::string("anonymous");
  std::string user(it->second.data(), it->second.size());
  if (!ValidUserName(user)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "metadata ", kUserMetadataKey, ": '",
        user.substr(0, kMaxUserNameLength), "' is not a valid user name (1..",
        kMaxUserNameLength, " characters of A-Z a-z 0-9 . _ - @)"));
  }
  return user;
}

absl::Status CheckJobId(const std::string& job_id) {
  if (job_id.empty()) {
    return absl::InvalidArgumentError("job_id: must not be empty");
  }
  if (job_id.size() > kMaxIdLength) {
    return absl::InvalidArgumentError(
        absl::StrCat("job_id: ", job_id.size(),
                     " characters is longer than the allowed ", kMaxIdLength));
  }
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* FinishUnary(grpc::CallbackServerContext* context,
                                      const absl::Status& status) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

// WaitJob: finishes when the scheduler reports the job terminal, or when the
// call is cancelled (client deadline, client cancel, server shutdown).
class WaitJobReactor final : public grpc::ServerUnaryReactor {
 public:
  WaitJobReactor(scheduler::Scheduler* scheduler, std::string job_id,
                 hxemu::v1::Job* response)
      : scheduler_(scheduler),
        job_id_(std::move(job_id)),
        state_(std::make_shared<SharedState>()) {
    state_->reactor = this;
    state_->response = response;
  }

  // Registers with the scheduler. Touches only a local copy of the shared
  // state: once the callback has fired, this reactor may already be gone.
  void Start() {
    std::shared_ptr<SharedState> state = state_;
    absl::StatusOr<uint64_t> handle = scheduler_->AddDoneCallback(
        job_id_, [state](const JobView& view) { state->Complete(view); });
    if (!handle.ok()) {
      state->FinishWith(ToGrpcStatus(handle.status()));
      return;
    }
    absl::MutexLock lock(&state->mu);
    state->callback_handle = *handle;
  }

  void OnCancel() override {
    std::shared_ptr<SharedState> state = state_;
    state->FinishWith(grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED,
                                   "WaitJob: the call ended before the job"));
  }

  void OnDone() override {
    uint64_t handle;
    {
      absl::MutexLock lock(&state_->mu);
      handle = state_->callback_handle;
    }
    if (handle != 0) scheduler_->RemoveDoneCallback(job_id_, handle);
    delete this;
  }

 private:
  // Shared with the scheduler's callback, which may outlive the reactor.
  struct SharedState {
    absl::Mutex mu;
    bool finished ABSL_GUARDED_BY(mu) = false;
    grpc::ServerUnaryReactor* reactor ABSL_GUARDED_BY(mu) = nullptr;
    hxemu::v1::Job* response ABSL_GUARDED_BY(mu) = nullptr;
    // 0 until the scheduler accepted the callback.
    uint64_t callback_handle ABSL_GUARDED_BY(mu) = 0;

    // Both finish the call at most once, outside the lock (Finish may run
    // OnDone, which takes the lock, on this thread).
    void Complete(const JobView& view) {
      grpc::ServerUnaryReactor* to_finish;
      {
        absl::MutexLock lock(&mu);
        if (finished) return;
        finished = true;
        *response = JobToProto(view);
        to_finish = reactor;
      }
      to_finish->Finish(grpc::Status::OK);
    }
    void FinishWith(const grpc::Status& status) {
      grpc::ServerUnaryReactor* to_finish;
      {
        absl::MutexLock lock(&mu);
        if (finished) return;
        finished = true;
        to_finish = reactor;
      }
      to_finish->Finish(status);
    }
  };

  scheduler::Scheduler* const scheduler_;
  const std::string job_id_;
  std::shared_ptr<SharedState> state_;
};

// GetResult: writes pre-split chunks one after the other.
class ResultWriter final
    : public grpc::ServerWriteReactor<hxemu::v1::ResultChunk> {
 public:
  explicit ResultWriter(std::vector<hxemu::v1::ResultChunk> chunks)
      : chunks_(std::move(chunks)) {
    WriteNext();
  }
  void OnWriteDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "client went away"));
      return;
    }
    WriteNext();
  }
  void OnDone() override { delete this; }

 private:
  void WriteNext() {
    if (next_ == chunks_.size()) {
      Finish(grpc::Status::OK);
      return;
    }
    StartWrite(&chunks_[next_++]);
  }
  std::vector<hxemu::v1::ResultChunk> chunks_;
  size_t next_ = 0;
};

// WatchJob: pushed, not polled. The scheduler calls the watcher
// (Scheduler::AddWatcher) whenever the job's view may have changed; the
// reactor then takes the current view and writes it if it differs from the
// last one written. One thread at a time is "busy" (taking a view or with a
// write in flight); changes meanwhile only mark the stream dirty and are
// coalesced into the next write (the client sees the latest view, never a
// backlog). Views are taken without our lock held (Get may run watchers,
// this one included). The stream ends after writing a terminal view, or
// when the call is cancelled. No thread ever blocks.
class WatchJobWriter final : public grpc::ServerWriteReactor<hxemu::v1::Job> {
 public:
  static WatchJobWriter* Start(scheduler::Scheduler* scheduler,
                               std::string job_id) {
    auto* reactor = new WatchJobWriter(scheduler, std::move(job_id));
    std::shared_ptr<Shared> shared = reactor->shared_;
    absl::StatusOr<uint64_t> handle =
        scheduler->AddWatcher(reactor->job_id_, [shared] { shared->Poke(); });
    {
      absl::MutexLock lock(&shared->mu);
      if (handle.ok()) shared->handle = *handle;
    }
    // The first view (also when the job is already terminal, or gone).
    shared->Poke();
    return reactor;
  }

  void OnWriteDone(bool ok) override {
    Next finish;
    bool pump = false;
    {
      absl::MutexLock lock(&shared_->mu);
      if (!ok) {
        finish = Cancelled("client went away");
      } else if (IsTerminal(last_.state())) {
        finish = grpc::Status::OK;
      } else if (shared_->cancelled) {
        finish = Cancelled("call cancelled");
      } else if (shared_->dirty) {
        pump = true;  // stays busy
      }
      if (!pump) shared_->busy = false;
    }
    if (pump) {
      Pump();
    } else if (finish.has_value()) {
      shared_->FinishOnce(*finish);
    }
  }

  void OnCancel() override {
    bool finish = false;
    {
      absl::MutexLock lock(&shared_->mu);
      shared_->cancelled = true;
      finish = !shared_->busy;  // else the busy thread finishes
    }
    if (finish) shared_->FinishOnce(Cancelled("call cancelled"));
  }

  void OnDone() override {
    uint64_t handle;
    {
      absl::MutexLock lock(&shared_->mu);
      shared_->reactor = nullptr;  // watcher calls from now on do nothing
      handle = shared_->handle;
    }
    if (handle != 0) scheduler_->RemoveWatcher(job_id_, handle);
    delete this;
  }

 private:
  using Next = std::optional<grpc::Status>;

  // Shared with the scheduler's watcher callback, which may run after the
  // reactor is gone (then `reactor` is null). The reactor lives while
  // `busy` or until Finish: OnDone comes only after Finish, which is called
  // once, by the busy thread or when nobody is busy.
  struct Shared {
    absl::Mutex mu;
    WatchJobWriter* reactor ABSL_GUARDED_BY(mu) = nullptr;
    uint64_t handle ABSL_GUARDED_BY(mu) = 0;
    bool busy ABSL_GUARDED_BY(mu) = false;       // taking a view / writing
    bool dirty ABSL_GUARDED_BY(mu) = false;      // a change not yet looked at
    bool cancelled ABSL_GUARDED_BY(mu) = false;  // OnCancel ran
    bool finished ABSL_GUARDED_BY(mu) = false;   // Finish called

    // The scheduler says the view may have changed.
    void Poke() {
      WatchJobWriter* pump = nullptr;
      bool finish = false;
      {
        absl::MutexLock lock(&mu);
        // Gone, or finished (a late call taken out before the last one):
        // nothing may be written any more.
        if (reactor == nullptr || finished) return;
        dirty = true;
        if (busy) return;  // the busy thread looks again
        if (cancelled) {
          finish = true;
        } else {
          busy = true;
          pump = reactor;
        }
      }
      if (finish) FinishOnce(Cancelled("call cancelled"));
      if (pump != nullptr) pump->Pump();
    }

    void FinishOnce(const grpc::Status& status) {
      WatchJobWriter* to_finish;
      {
        absl::MutexLock lock(&mu);
        if (finished || reactor == nullptr) return;
        finished = true;
        to_finish = reactor;
      }
      to_finish->Finish(status);
    }
  };

  WatchJobWriter(scheduler::Scheduler* scheduler, std::string job_id)
      : scheduler_(scheduler),
        job_id_(std::move(job_id)),
        shared_(std::make_shared<Shared>()) {
    absl::MutexLock lock(&shared_->mu);
    shared_->reactor = this;
  }

  static grpc::Status Cancelled(const char* why) {
    return grpc::Status(grpc::StatusCode::CANCELLED, why);
  }
  static bool IsTerminal(hxemu::v1::JobState state) {
    return state == hxemu::v1::JOB_STATE_SUCCEEDED ||
           state == hxemu::v1::JOB_STATE_FAILED ||
           state == hxemu::v1::JOB_STATE_CANCELLED ||
           state == hxemu::v1::JOB_STATE_EXPIRED;
  }
  static bool SameView(const hxemu::v1::Job& a, const hxemu::v1::Job& b) {
    return a.state() == b.state() && a.state_reason() == b.state_reason() &&
           a.queue_position() == b.queue_position() &&
           a.progress_ms() == b.progress_ms();
  }

  // Called by the thread that became busy: takes views until one differs
  // from the last written (then writes it; OnWriteDone continues) or
  // nothing changed meanwhile (then it is no longer busy).
  void Pump() {
    Next finish;
    for (;;) {
      {
        absl::MutexLock lock(&shared_->mu);
        shared_->dirty = false;
      }
      absl::StatusOr<JobView> view = scheduler_->Get(job_id_);  // no lock
      absl::MutexLock lock(&shared_->mu);
      if (!view.ok()) {
        finish = ToGrpcStatus(view.status());
      } else if (shared_->cancelled) {
        finish = Cancelled("call cancelled");
      } else {
        hxemu::v1::Job job = JobToProto(*view);
        if (!written_any_ || !SameView(job, last_)) {
          written_any_ = true;
          last_ = std::move(job);
          StartWrite(&last_);  // still busy
          return;
        }
        if (shared_->dirty) continue;  // changed while we looked
      }
      shared_->busy = false;
      break;
    }
    if (finish.has_value()) shared_->FinishOnce(*finish);
  }

  scheduler::Scheduler* const scheduler_;
  const std::string job_id_;
  const std::shared_ptr<Shared> shared_;
  // The view being written / written last; only touched by the busy thread.
  hxemu::v1::Job last_;
  bool written_any_ = false;
};

template <typename Message>
class ErrorWriter final : public grpc::ServerWriteReactor<Message> {
 public:
  explicit ErrorWriter(const absl::Status& status) {
    this->Finish(ToGrpcStatus(status));
  }
  void OnDone() override { delete this; }
};

}  // namespace

bool IsValidUserName(std::string_view user) { return ValidUserName(user); }

hxemu::v1::Job JobToProto(const JobView& view) {
  hxemu::v1::Job job;
  job.set_job_id(view.id);
  job.set_user(view.user);
  job.set_state(StateToProto(view.state));
  job.set_state_reason(view.state_reason);
  if (!view.error.ok()) {
    job.mutable_error()->set_code(static_cast<int32_t>(view.error.code()));
    job.mutable_error()->set_message(std::string(view.error.message()));
  }
  job.set_progress_ms(view.progress_ms);
  job.set_runtime_ms(view.runtime_ms);
  if (view.chip_id.has_value()) job.set_chip_id(*view.chip_id);
  job.set_queue_position(view.queue_position);
  job.set_submit_time_unix_ms(UnixMillisOrZero(view.submit_time));
  job.set_start_time_unix_ms(UnixMillisOrZero(view.start_time));
  job.set_end_time_unix_ms(UnixMillisOrZero(view.end_time));
  job.set_reason(ReasonToProto(view.reason));
  job.set_jobs_ahead_own(view.jobs_ahead_own);
  job.set_jobs_ahead_other_users(view.jobs_ahead_other_users);
  job.set_estimated_start_time_unix_ms(
      UnixMillisOrZero(view.estimated_start_time));
  job.set_deadline_unix_ms(UnixMillisOrZero(view.deadline));
  job.set_result_evicted(view.result_evicted);
  job.set_result_bytes(view.result_bytes);
  job.set_result_expire_time_unix_ms(UnixMillisOrZero(view.result_expire_time));
  return job;
}

uint64_t ConfigKey(const hxemu::v1::Experiment& experiment) {
  std::string bytes;
  for (const hxemu::v1::Population& population : experiment.populations()) {
    if (population.cell_type() == hxemu::v1::CELL_TYPE_HX_NEURON) {
      population.AppendToString(&bytes);
    } else {
      // Spike sources are stimulus, not configuration: only their shape.
      absl::StrAppend(&bytes, "source:", population.size(), ";");
    }
  }
  for (const hxemu::v1::Projection& projection : experiment.projections()) {
    projection.AppendToString(&bytes);
  }
  // The calibration applied before the run and the chip-global synapse DAC
  // bias are configuration too.
  if (experiment.has_initial_config()) {
    experiment.initial_config().AppendToString(&bytes);
  }
  if (experiment.has_synapse_dac_bias()) {
    absl::StrAppend(&bytes, "synapse_dac_bias:", experiment.synapse_dac_bias());
  }
  return Fingerprint(bytes);
}

std::vector<hxemu::v1::ResultChunk> SplitResult(const hxemu::v1::Result& result,
                                                size_t max_chunk_bytes) {
  // Upper bounds per element on the wire: a varint of a 64-bit tick count is
  // at most 10 bytes, a 10-bit code at most 2.
  constexpr size_t kBytesPerSpike = 10;
  constexpr size_t kBytesPerSample = 12;
  const size_t max_spikes =
      std::max<size_t>(1, max_chunk_bytes / kBytesPerSpike);
  const size_t max_samples =
      std::max<size_t>(1, max_chunk_bytes / kBytesPerSample);

  std::vector<hxemu::v1::ResultChunk> chunks;
  auto new_chunk = [&]() -> hxemu::v1::Result* {
    hxemu::v1::Result* r = chunks.emplace_back().mutable_result();
    r->set_chip_id(result.chip_id());
    r->set_runtime_ms(result.runtime_ms());
    return r;
  };
  // The first chunk carries every field except the three bulk lists (spike
  // trains, traces, CADC reads), so a field added to Result later reaches the
  // client without a change here; the bulk lists follow within the budget.
  hxemu::v1::Result* current = new_chunk();
  *current = result;
  current->clear_spike_trains();
  current->clear_traces();
  current->clear_cadc_reads();
  size_t budget =
      max_chunk_bytes - std::min(max_chunk_bytes, current->ByteSizeLong());

  for (const hxemu::v1::SpikeTrain& train : result.spike_trains()) {
    size_t cost = 16 + train.times_ticks_size() * kBytesPerSpike;
    if (cost > budget && budget < max_chunk_bytes) {
      current = new_chunk();
      budget = max_chunk_bytes;
    }
    if (static_cast<size_t>(train.times_ticks_size()) <= max_spikes) {
      *current->add_spike_trains() = train;
      budget -= std::min(budget, cost);
      continue;
    }
    // A train longer than a chunk: split it over several chunks.
    for (int begin = 0; begin < train.times_ticks_size();
         begin += static_cast<int>(max_spikes)) {
      if (budget < max_chunk_bytes) {
        current = new_chunk();
        budget = max_chunk_bytes;
      }
      hxemu::v1::SpikeTrain* piece = current->add_spike_trains();
      piece->set_population(train.population());
      piece->set_neuron(train.neuron());
      piece->set_circuit(train.circuit());
      int end = std::min(train.times_ticks_size(),
                         begin + static_cast<int>(max_spikes));
      piece->mutable_times_ticks()->Add(train.times_ticks().begin() + begin,
                                        train.times_ticks().begin() + end);
      budget = 0;
    }
  }
  for (const hxemu::v1::Trace& trace : result.traces()) {
    int begin = 0;
    do {
      size_t room = budget / kBytesPerSample;
      if (room < 1024 && budget < max_chunk_bytes) {
        current = new_chunk();
        budget = max_chunk_bytes;
        room = max_samples;
      }
      int end = std::min(trace.codes_size(), begin + static_cast<int>(room));
      hxemu::v1::Trace* piece = current->add_traces();
      piece->set_population(trace.population());
      piece->set_neuron(trace.neuron());
      piece->set_circuit(trace.circuit());
      piece->set_observable(trace.observable());
      piece->mutable_times_ticks()->Add(trace.times_ticks().begin() + begin,
                                        trace.times_ticks().begin() + end);
      piece->mutable_codes()->Add(trace.codes().begin() + begin,
                                  trace.codes().begin() + end);
      budget -= std::min(budget, 32 + (end - begin) * kBytesPerSample);
      begin = end;
    } while (begin < trace.codes_size());
  }
  for (const hxemu::v1::CadcRead& read : result.cadc_reads()) {
    // One read is at most 512 codes (~1 KiB): never split, only moved on.
    const size_t cost = 16 + read.codes_size() * 2;
    if (cost > budget && budget < max_chunk_bytes) {
      current = new_chunk();
      budget = max_chunk_bytes;
    }
    *current->add_cadc_reads() = read;
    budget -= std::min(budget, cost);
  }
  return chunks;
}

ExperimentService::ExperimentService(scheduler::Scheduler* scheduler,
                                     ServerMetrics* metrics,
                                     const ServerOptions& options)
    : scheduler_(scheduler), metrics_(metrics), options_(options) {}

absl::StatusOr<std::string> ExperimentService::UserOf(
    const grpc::CallbackServerContext& context) const {
  if (options_.auth_tokens.empty()) return UserFromMetadata(context);
  const auto& metadata = context.client_metadata();
  auto it = metadata.find(kAuthMetadataKey);
  constexpr std::string_view kBearer = "Bearer ";
  if (it == metadata.end()) {
    return absl::UnauthenticatedError(
        "metadata authorization: missing; this server needs "
        "'authorization: Bearer <token>'");
  }
  const std::string_view value(it->second.data(), it->second.size());
  if (value.substr(0, kBearer.size()) != kBearer) {
    return absl::UnauthenticatedError(
        "metadata authorization: not of the form 'Bearer <token>'");
  }
  auto user =
      options_.auth_tokens.find(std::string(value.substr(kBearer.size())));
  if (user == options_.auth_tokens.end()) {
    return absl::UnauthenticatedError("metadata authorization: unknown token");
  }
  return user->second;
}

absl::StatusOr<JobView> ExperimentService::FindOwnJob(
    const std::string& user, const std::string& job_id) const {
  if (absl::Status s = CheckJobId(job_id); !s.ok()) return s;
  absl::StatusOr<JobView> view = scheduler_->Get(job_id);
  if (!view.ok() || view->user != user) {
    return absl::NotFoundError(
        absl::StrCat("job_id: no job '", job_id, "' for user '", user, "'"));
  }
  return view;
}

grpc::ServerUnaryReactor* ExperimentService::SubmitJob(
    grpc::CallbackServerContext* context,
    const hxemu::v1::SubmitJobRequest* request, hxemu::v1::Job* response) {
  absl::StatusOr<hxemu::v1::Job> job = Submit(*context, *request);
  metrics_->JobSubmitted(job.ok());
  if (job.ok()) *response = *std::move(job);
  if (absl::IsResourceExhausted(job.status()) ||
      absl::IsUnavailable(job.status())) {
    context->AddTrailingMetadata("grpc-retry-pushback-ms", kRetryPushbackMs);
  }
  return FinishUnary(context, job.status());
}

absl::StatusOr<hxemu::v1::Job> ExperimentService::Submit(
    const grpc::CallbackServerContext& context,
    const hxemu::v1::SubmitJobRequest& request) {
  absl::StatusOr<std::string> user = UserOf(context);
  if (!user.ok()) return user.status();
  if (request.request_id().size() > kMaxIdLength) {
    return absl::InvalidArgumentError(
        absl::StrCat("request_id: ", request.request_id().size(),
                     " characters is longer than the allowed ", kMaxIdLength));
  }
  if (!request.has_experiment()) {
    return absl::InvalidArgumentError("experiment: is required");
  }
  if (absl::Status s =
          emulator::ValidateExperiment(request.experiment(), options_.limits);
      !s.ok()) {
    return absl::Status(s.code(), absl::StrCat("experiment.", s.message()));
  }
  // Experiment.initial_config: the calibrated per-neuron values become
  // explicit parameters here, at the API edge (contract C3).
  absl::StatusOr<hxemu::v1::Experiment> experiment =
      calibration::ApplyInitialConfig(request.experiment());
  if (!experiment.ok()) {
    return absl::Status(
        experiment.status().code(),
        absl::StrCat("experiment.", experiment.status().message()));
  }
  if (request.experiment().has_initial_config()) {
    if (absl::Status s =
            emulator::ValidateExperiment(*experiment, options_.limits);
        !s.ok()) {
      return absl::Status(s.code(), absl::StrCat("experiment.", s.message()));
    }
  }

  const double max_wall_time_s = request.max_wall_time_s();
  if (!(max_wall_time_s >= 0) || max_wall_time_s > kMaxWallTimeS) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_wall_time_s: ", max_wall_time_s, " is out of range 0..",
        kMaxWallTimeS, " (0 = no deadline)"));
  }

  scheduler::SubmitOptions submit_options;
  if (max_wall_time_s > 0) {
    submit_options.max_wall_time = absl::Seconds(max_wall_time_s);
  }
  if (!request.request_id().empty()) {
    // The scheduler dedups atomically (two racing retries get one job).
    submit_options.request_id = request.request_id();
    submit_options.request_fingerprint =
        Fingerprint(request.SerializeAsString());
  }
  submit_options.config_key = ConfigKey(*experiment);
  absl::StatusOr<scheduler::Submitted> submitted = scheduler_->SubmitJob(
      *user,
      std::make_shared<const hxemu::v1::Experiment>(*std::move(experiment)),
      submit_options);
  if (!submitted.ok()) return submitted.status();
  if (!submitted->duplicate) {
    // The handle is not kept: the callback fires once, when the job ends.
    ServerMetrics* metrics = metrics_;
    (void)scheduler_->AddDoneCallback(
        submitted->job_id,
        [metrics](const JobView& v) { metrics->JobFinished(v); });
  }
  absl::StatusOr<JobView> view = scheduler_->Get(submitted->job_id);
  if (!view.ok()) return view.status();
  return JobToProto(*view);
}

grpc::ServerUnaryReactor* ExperimentService::GetJob(
    grpc::CallbackServerContext* context,
    const hxemu::v1::GetJobRequest* request, hxemu::v1::Job* response) {
  absl::StatusOr<std::string> user = UserOf(*context);
  if (!user.ok()) return FinishUnary(context, user.status());
  absl::StatusOr<JobView> view = FindOwnJob(*user, request->job_id());
  if (view.ok()) *response = JobToProto(*view);
  return FinishUnary(context, view.status());
}

grpc::ServerUnaryReactor* ExperimentService::WaitJob(
    grpc::CallbackServerContext* context,
    const hxemu::v1::WaitJobRequest* request, hxemu::v1::Job* response) {
  absl::StatusOr<std::string> user = UserOf(*context);
  if (!user.ok()) return FinishUnary(context, user.status());
  absl::StatusOr<JobView> view = FindOwnJob(*user, request->job_id());
  if (!view.ok()) return FinishUnary(context, view.status());
  auto* reactor = new WaitJobReactor(scheduler_, request->job_id(), response);
  reactor->Start();
  return reactor;
}

grpc::ServerWriteReactor<hxemu::v1::Job>* ExperimentService::WatchJob(
    grpc::CallbackServerContext* context,
    const hxemu::v1::WatchJobRequest* request) {
  absl::StatusOr<std::string> user = UserOf(*context);
  absl::StatusOr<JobView> view =
      user.ok() ? FindOwnJob(*user, request->job_id()) : user.status();
  if (!view.ok()) {
    return new ErrorWriter<hxemu::v1::Job>(view.status());
  }
  return WatchJobWriter::Start(scheduler_, request->job_id());
}

grpc::ServerUnaryReactor* ExperimentService::CancelJob(
    grpc::CallbackServerContext* context,
    const hxemu::v1::CancelJobRequest* request, hxemu::v1::Job* response) {
  absl::StatusOr<std::string> user = UserOf(*context);
  if (!user.ok()) return FinishUnary(context, user.status());
  absl::StatusOr<JobView> view = FindOwnJob(*user, request->job_id());
  if (!view.ok()) return FinishUnary(context, view.status());
  view = scheduler_->Cancel(request->job_id());
  if (view.ok()) *response = JobToProto(*view);
  return FinishUnary(context, view.status());
}

grpc::ServerWriteReactor<hxemu::v1::ResultChunk>* ExperimentService::GetResult(
    grpc::CallbackServerContext* context,
    const hxemu::v1::GetResultRequest* request) {
  absl::StatusOr<std::string> user = UserOf(*context);
  if (!user.ok()) return new ErrorWriter<hxemu::v1::ResultChunk>(user.status());
  absl::StatusOr<JobView> view = FindOwnJob(*user, request->job_id());
  if (!view.ok()) return new ErrorWriter<hxemu::v1::ResultChunk>(view.status());
  absl::StatusOr<std::shared_ptr<const hxemu::v1::Result>> result =
      scheduler_->GetResult(request->job_id());
  if (!result.ok()) {
    return new ErrorWriter<hxemu::v1::ResultChunk>(
        absl::Status(result.status().code(),
                     absl::StrCat("job_id: ", result.status().message())));
  }
  metrics_->ResultBytesSent((*result)->ByteSizeLong());
  return new ResultWriter(SplitResult(**result, kMaxResultChunkBytes));
}

grpc::ServerUnaryReactor* ExperimentService::ListJobs(
    grpc::CallbackServerContext* context,
    const hxemu::v1::ListJobsRequest* request,
    hxemu::v1::ListJobsResponse* response) {
  absl::StatusOr<std::string> user = UserOf(*context);
  if (!user.ok()) return FinishUnary(context, user.status());
  if (request->page_size() < 0 || request->page_size() > kMaxPageSize) {
    return FinishUnary(
        context, absl::InvalidArgumentError(absl::StrCat(
                     "page_size: ", request->page_size(),
                     " is out of range 0..", kMaxPageSize, " (0 = 100)")));
  }
  if (request->page_token().size() > kMaxIdLength) {
    return FinishUnary(context,
                       absl::InvalidArgumentError("page_token: not a token "
                                                  "from a ListJobs response"));
  }
  absl::StatusOr<scheduler::JobPage> page =
      scheduler_->List(*user, request->page_size(), request->page_token());
  if (!page.ok()) {
    return FinishUnary(
        context,
        absl::Status(page.status().code(),
                     absl::StrCat("page_token: ", page.status().message())));
  }
  for (const JobView& view : page->jobs)
    *response->add_jobs() = JobToProto(view);
  response->set_next_page_token(page->next_page_token);
  return FinishUnary(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* ExperimentService::ListChips(
    grpc::CallbackServerContext* context,
    const hxemu::v1::ListChipsRequest* /*request*/,
    hxemu::v1::ListChipsResponse* response) {
  if (absl::StatusOr<std::string> user = UserOf(*context); !user.ok()) {
    return FinishUnary(context, user.status());
  }
  // Chips are shared: no job ids here, they belong to their users.
  for (const scheduler::ChipView& chip : scheduler_->ChipsView()) {
    hxemu::v1::ChipInfo* info = response->add_chips();
    info->set_chip_id(chip.id);
    info->set_busy(chip.busy);
    info->set_queued_jobs(chip.queued_jobs);
    info->set_jobs_started(chip.jobs_started);
    info->set_reconfigurations(chip.reconfigurations);
    info->set_busy_seconds(absl::ToDoubleSeconds(chip.busy_time));
    if (calibrations_ != nullptr) {
      std::string message;
      info->set_calibration_state(
          calibrations_->DefaultState(chip.id, &message));
      info->set_calibration_message(message);
    }
  }
  return FinishUnary(context, absl::OkStatus());
}

grpc::ServerUnaryReactor* ExperimentService::GetCalibration(
    grpc::CallbackServerContext* context,
    const hxemu::v1::GetCalibrationRequest* request,
    hxemu::v1::Calibration* response) {
  if (absl::StatusOr<std::string> user = UserOf(*context); !user.ok()) {
    return FinishUnary(context, user.status());
  }
  if (calibrations_ == nullptr) {
    return FinishUnary(
        context, absl::UnavailableError("calibrations are not served here"));
  }
  // Finished from the store's worker thread when the calibration has to be
  // computed; at once otherwise. The store answers every request (Stop
  // fails the waiting ones), so Finish is called exactly once.
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  std::optional<uint32_t> chip_id;
  if (request->has_chip_id()) chip_id = request->chip_id();
  calibrations_->Get(
      chip_id, request->targets(),
      [reactor, response](absl::StatusOr<hxemu::v1::Calibration> cal) {
        if (cal.ok()) *response = *std::move(cal);
        reactor->Finish(ToGrpcStatus(cal.status()));
      });
  return reactor;
}

grpc::ServerUnaryReactor* ExperimentService::GetServerInfo(
    grpc::CallbackServerContext* context,
    const hxemu::v1::GetServerInfoRequest* /*request*/,
    hxemu::v1::ServerInfo* response) {
  if (absl::StatusOr<std::string> user = UserOf(*context); !user.ok()) {
    return FinishUnary(context, user.status());
  }
  response->set_version(HXEMU_VERSION);
  response->set_num_chips(static_cast<uint32_t>(options_.num_chips));
  response->set_chip_model("HICANN-X v3 (BrainScaleS-2), emulated");
  const emulator::ExperimentLimits& limits = options_.limits;
  response->set_max_runtime_ms(limits.max_runtime_ms);
  response->set_max_request_bytes(options_.max_request_bytes);
  response->set_max_madc_samples(limits.max_madc_samples);
  response->set_max_recorded_spikes(limits.max_recorded_spikes);
  response->set_max_input_spikes(limits.max_input_spikes);
  response->set_max_source_neurons(limits.max_source_neurons);
  response->set_max_queued_jobs(options_.max_queued_jobs);
  response->set_max_queued_jobs_per_user(options_.max_queued_jobs_per_user);
  response->set_max_wall_time_s(kMaxWallTimeS);
  response->set_result_ttl_s(absl::ToDoubleSeconds(options_.result_ttl));
  response->set_max_result_bytes(options_.max_result_bytes);
  response->set_max_result_chunk_bytes(kMaxResultChunkBytes);
  response->set_user_time_slice_ms(
      absl::ToDoubleMilliseconds(options_.user_time_slice));
  response->set_usage_half_life_s(
      absl::ToDoubleSeconds(options_.usage_half_life));
  response->set_auth_required(!options_.auth_tokens.empty());
  for (const emulator::NeuronParameterInfo& p :
       emulator::NeuronParameterTable()) {
    hxemu::v1::ParameterInfo* info = response->add_neuron_parameters();
    info->set_name(std::string(p.name));
    info->set_kind(std::string(emulator::ParameterKindName(p.kind)));
    info->set_min(p.min);
    info->set_max(p.max);
    info->set_default_value(p.default_value);
    info->set_unit(std::string(p.unit));
    info->set_description(std::string(p.description));
  }
  return FinishUnary(context, absl::OkStatus());
}

}  // namespace hxemu::server

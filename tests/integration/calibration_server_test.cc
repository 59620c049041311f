// Tests of the server's calibrations: the CalibrationStore (computed once,
// then served from memory, then from the disk cache by a new store; an
// unwritable cache directory only costs the disk copy; default calibrations
// in the background) and, through the real gRPC server in-process on a free
// loopback port, GetCalibration, the calibration state in ListChips and a
// job that starts from Experiment.initial_config. Calibrations cover two
// circuits only (fast under sanitizers); the benchmark does full chips.
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "../../server/src/calibration_store.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "hxemu/client/client.h"
#include "hxemu/server/server.h"
#include "hxemu/v1/service.grpc.pb.h"

namespace hxemu {
namespace {

using ::testing::HasSubstr;

const std::vector<uint32_t> kCircuits = {0, 1};

std::filesystem::path TempDir(const std::string& name) {
  std::filesystem::path dir =
      std::filesystem::temp_directory_path() /
      absl::StrCat("hxemu_calibration_server_test_", getpid(), "_", name);
  std::filesystem::remove_all(dir);
  return dir;
}

absl::StatusOr<v1::Calibration> GetNow(server::CalibrationStore& store,
                                       std::optional<uint32_t> chip,
                                       const v1::CalibrationTargets& targets) {
  std::promise<absl::StatusOr<v1::Calibration>> promise;
  std::future<absl::StatusOr<v1::Calibration>> future = promise.get_future();
  store.Get(chip, targets, [&promise](absl::StatusOr<v1::Calibration> c) {
    promise.set_value(std::move(c));
  });
  return future.get();
}

server::CalibrationStore::Options StoreOptions(const std::string& dir) {
  server::CalibrationStore::Options o;
  o.num_chips = 2;
  o.cache_dir = dir;
  o.circuits = kCircuits;
  return o;
}

TEST(CalibrationStoreTest, ComputedOnceThenMemoryThenDiskCache) {
  const std::filesystem::path dir = TempDir("once");
  v1::CalibrationTargets targets;
  targets.set_tau_mem_us(12);
  {
    server::CalibrationStore store(StoreOptions(dir.string()));
    absl::StatusOr<v1::Calibration> first = GetNow(store, 1, targets);
    ASSERT_TRUE(first.ok()) << first.status();
    EXPECT_EQ(first->chip_id(), 1u);
    EXPECT_EQ(first->targets().tau_mem_us(), 12);
    EXPECT_EQ(first->circuits_size(), 2);
    EXPECT_EQ(store.computed(), 1);
    // Second request: the same calibration, not computed again.
    absl::StatusOr<v1::Calibration> second = GetNow(store, 1, targets);
    ASSERT_TRUE(second.ok());
    EXPECT_EQ(second->SerializeAsString(), first->SerializeAsString());
    EXPECT_EQ(store.computed(), 1);
    EXPECT_EQ(store.disk_hits(), 0);
  }
  // A new store (server restart) finds it on disk.
  server::CalibrationStore again(StoreOptions(dir.string()));
  absl::StatusOr<v1::Calibration> third = GetNow(again, 1, targets);
  ASSERT_TRUE(third.ok());
  EXPECT_EQ(again.computed(), 0);
  EXPECT_EQ(again.disk_hits(), 1);
  EXPECT_EQ(third->targets().SerializeAsString(),
            GetNow(again, 1, targets)->targets().SerializeAsString());
  std::filesystem::remove_all(dir);
}

TEST(CalibrationStoreTest, UnwritableCacheDirectoryStillServes) {
  const std::filesystem::path dir = TempDir("unwritable");
  std::filesystem::create_directories(dir);
  { std::ofstream(dir / "file") << "x"; }
  // A directory below a regular file cannot be created, even by root.
  server::CalibrationStore store(StoreOptions((dir / "file" / "sub").string()));
  absl::StatusOr<v1::Calibration> cal = GetNow(store, 0, {});
  ASSERT_TRUE(cal.ok()) << cal.status();
  EXPECT_EQ(store.computed(), 1);
  ASSERT_TRUE(GetNow(store, 0, {}).ok());
  EXPECT_EQ(store.computed(), 1);  // kept in memory
  std::filesystem::remove_all(dir);
}

TEST(CalibrationStoreTest, BadRequestsAreAnsweredAtOnce) {
  server::CalibrationStore store(StoreOptions(""));
  absl::Status s = GetNow(store, 2, {}).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("chip_id: 2 is out of range 0..1"));
  v1::CalibrationTargets bad;
  bad.set_leak(10);
  s = GetNow(store, 0, bad).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("targets.leak: 10 is out of range"));
  EXPECT_EQ(store.computed(), 0);
  store.Stop();
  EXPECT_EQ(GetNow(store, 0, {}).status().code(),
            absl::StatusCode::kUnavailable);
}

TEST(CalibrationStoreTest, DefaultCalibrationsAreComputedInTheBackground) {
  server::CalibrationStore::Options o = StoreOptions("");
  o.calibrate_at_start = true;
  server::CalibrationStore store(o);
  // Poll (no timing assertion: the loop ends when both are ready).
  for (;;) {
    std::string message;
    const bool ready =
        store.DefaultState(0, &message) == v1::CALIBRATION_STATE_READY &&
        store.DefaultState(1, &message) == v1::CALIBRATION_STATE_READY;
    if (ready) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(store.computed(), 2);
  // Served from memory now; unset chip = the lowest chip with one.
  absl::StatusOr<v1::Calibration> any = GetNow(store, std::nullopt, {});
  ASSERT_TRUE(any.ok());
  EXPECT_EQ(any->chip_id(), 0u);
  EXPECT_EQ(store.computed(), 2);
}

class CalibrationServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = TempDir("server");
    server::ServerOptions options;
    options.listen_address = "127.0.0.1:0";
    options.num_chips = 2;
    options.calibration_cache_dir = dir_.string();
    options.calibration_circuits = kCircuits;
    auto started = server::Server::Start(options);
    ASSERT_TRUE(started.ok()) << started.status();
    server_ = std::move(*started);
    stub_ = v1::ExperimentService::NewStub(grpc::CreateChannel(
        server_->address(), grpc::InsecureChannelCredentials()));
  }
  void TearDown() override {
    if (server_) server_->Shutdown(absl::Seconds(1));
    std::filesystem::remove_all(dir_);
  }
  v1::CalibrationState StateOf(uint32_t chip) {
    grpc::ClientContext context;
    v1::ListChipsResponse chips;
    EXPECT_TRUE(stub_->ListChips(&context, {}, &chips).ok());
    for (const auto& c : chips.chips()) {
      if (c.chip_id() == chip) return c.calibration_state();
    }
    return v1::CALIBRATION_STATE_UNSPECIFIED;
  }

  std::filesystem::path dir_;
  std::unique_ptr<server::Server> server_;
  std::unique_ptr<v1::ExperimentService::Stub> stub_;
};

TEST_F(CalibrationServerTest, GetCalibrationThenACalibratedJob) {
  EXPECT_EQ(StateOf(1), v1::CALIBRATION_STATE_NONE);
  v1::GetCalibrationRequest request;
  request.set_chip_id(1);
  v1::Calibration cal;
  {
    grpc::ClientContext context;
    grpc::Status status = stub_->GetCalibration(&context, request, &cal);
    ASSERT_TRUE(status.ok()) << status.error_message();
  }
  EXPECT_EQ(cal.chip_id(), 1u);
  EXPECT_EQ(cal.circuits_size(), 2);
  EXPECT_EQ(cal.num_failed(), 0u);
  EXPECT_EQ(StateOf(1), v1::CALIBRATION_STATE_READY);
  EXPECT_EQ(StateOf(0), v1::CALIBRATION_STATE_NONE);

  // A job with no chip and the calibration as initial_config runs on its
  // chip with calibrated neurons: both rest at the leak target, 80 CADC LSB
  // = 0.42 V, i.e. about 358 MADC LSB (the CADC's own offset mismatch of a
  // few LSB lets the voltages differ by ~12 mV = ~10 MADC LSB); without the
  // calibration they would sit at the table default leak (0.1 V, ~85 LSB).
  v1::Experiment e;
  e.set_runtime_ms(0.06);
  e.set_seed(5);
  v1::Population* pop = e.add_populations();
  pop->set_size(2);
  pop->set_cell_type(v1::CELL_TYPE_HX_NEURON);
  v1::NeuronParameter* off = pop->add_parameters();
  off->set_name("threshold_enable");
  off->add_values(0);
  v1::Recording* rec = e.add_recordings();
  rec->set_population(0);
  rec->set_observable(v1::OBSERVABLE_V);
  *e.mutable_initial_config() = cal;
  client::ConnectOptions copts;
  copts.address = server_->address();
  copts.user = "alice";
  auto client = client::Client::Connect(copts);
  absl::StatusOr<v1::Job> job = client->Submit(e);
  ASSERT_TRUE(job.ok()) << job.status();
  job = client->WaitJob(job->job_id(), absl::Seconds(60));
  ASSERT_TRUE(job.ok()) << job.status();
  ASSERT_EQ(job->state(), v1::JOB_STATE_SUCCEEDED) << job->error().message();
  EXPECT_EQ(job->chip_id(), 1u);
  absl::StatusOr<v1::Result> result = client->GetResult(job->job_id());
  ASSERT_TRUE(result.ok()) << result.status();
  ASSERT_EQ(result->traces_size(), 2);
  for (const v1::Trace& trace : result->traces()) {
    double mean = 0.0;
    int n = 0;
    for (int k = 0; k < trace.codes_size(); ++k) {
      if (trace.times_ticks(k) < 2500) continue;  // settled after 20 us
      mean += trace.codes(k);
      ++n;
    }
    ASSERT_GT(n, 0);
    EXPECT_NEAR(mean / n, 358.0, 25.0) << "circuit " << trace.circuit();
  }

  // A malformed initial_config is rejected at submission, naming the field.
  e.mutable_initial_config()->mutable_circuits(0)->set_circuit(999);
  absl::StatusOr<v1::Job> bad = client->Submit(e);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(),
              HasSubstr("experiment.initial_config.circuits[0].circuit"));
}

TEST_F(CalibrationServerTest, OutOfRangeTargetsAreRejectedWithTheRange) {
  v1::GetCalibrationRequest request;
  request.mutable_targets()->set_tau_mem_us(100);
  v1::Calibration cal;
  grpc::ClientContext context;
  grpc::Status status = stub_->GetCalibration(&context, request, &cal);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(),
              HasSubstr("targets.tau_mem_us: 100 is out of range 0.5..60"));
}

}  // namespace
}  // namespace hxemu

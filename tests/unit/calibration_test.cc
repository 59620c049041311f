// Tests of the calibration library (hxemu_calibration).
//
// Part 1 (no chip): the parallel binary search on synthetic monotone
// measurement functions, target defaults and ranges, the on-disk cache.
// Part 2 (emulated chip, a few circuits): that a calibration brings the
// spread across circuits down to <= 1 CADC LSB for the potentials and
// <= 2 % for the time constants (before: the raw mismatch), that a
// calibration of chip A applied on chip B is visibly worse, and that
// ApplyInitialConfig rewrites experiments as contract C3 says.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "hxemu/calibration/algorithm.h"
#include "hxemu/calibration/apply.h"
#include "hxemu/calibration/cache.h"
#include "hxemu/calibration/calibrate.h"
#include "hxemu/calibration/measurement.h"
#include "hxemu/calibration/targets.h"
#include "hxemu/emulator/chip.h"
#include "hxemu/v1/calibration.pb.h"
#include "hxemu/v1/experiment.pb.h"

namespace hxemu::calibration {
namespace {

using ::testing::HasSubstr;

// ---- Binary search on synthetic measurements --------------------------------

// Neuron i responds linearly: value = gain_i * code + offset_i.
struct Linear {
  std::vector<double> gain, offset;
  double operator()(size_t i, int32_t code) const {
    return gain[i] * code + offset[i];
  }
};

// Smallest |f(code) - target| over the whole space (brute force).
template <typename F>
double BestPossibleError(const F& f, size_t i, double target,
                         const SearchSpace& space) {
  double best = std::numeric_limits<double>::infinity();
  for (int32_t c = space.min_code; c <= space.max_code; ++c) {
    best = std::min(best, std::abs(f(i, c) - target));
  }
  return best;
}

template <typename F>
MeasureFunction Measure(const F& f, int* calls = nullptr,
                        std::vector<int32_t>* first_codes = nullptr) {
  return [=](absl::Span<const int32_t> codes)
             -> absl::StatusOr<std::vector<double>> {
    if (calls != nullptr) {
      if (*calls == 0 && first_codes != nullptr) {
        first_codes->assign(codes.begin(), codes.end());
      }
      ++*calls;
    }
    std::vector<double> v(codes.size());
    for (size_t i = 0; i < codes.size(); ++i) v[i] = f(i, codes[i]);
    return v;
  };
}

TEST(BinarySearchTest, FindsTheBestCodeOfEveryNeuronOnAnIncreasingLine) {
  // 64 neurons with 30 % gain and +-60 code offset spread (like a mismatched
  // DAC); targets anywhere in the reachable range.
  Linear f;
  std::vector<double> targets;
  for (int i = 0; i < 64; ++i) {
    f.gain.push_back(0.2 * (1.0 + 0.3 * std::sin(i * 1.7)));
    f.offset.push_back(12.0 * std::cos(i * 0.9));
    targets.push_back(40.0 + i);
  }
  const SearchSpace space{0, 1022, Slope::kIncreasing};
  int calls = 0;
  absl::StatusOr<SearchResult> r =
      BinarySearch(Measure(f, &calls), targets, space);
  ASSERT_TRUE(r.ok()) << r.status();
  // ceil(log2(1022)) = 10 measurements, plus 2 extra steps.
  EXPECT_EQ(r->measurements, 12);
  EXPECT_EQ(calls, 12);
  for (size_t i = 0; i < targets.size(); ++i) {
    EXPECT_NEAR(std::abs(r->measured[i] - targets[i]),
                BestPossibleError(f, i, targets[i], space), 1e-9)
        << "neuron " << i << " code " << r->codes[i];
    EXPECT_DOUBLE_EQ(r->measured[i], f(i, r->codes[i]));
  }
}

TEST(BinarySearchTest, FindsTheBestCodeOnADecreasingHyperbola) {
  // tau = k_i / code, as tau_syn and tau_mem respond to their biases.
  auto tau = [](size_t i, int32_t code) {
    return 2000.0 * (1.0 + 0.08 * std::sin(i * 2.3)) / std::max(code, 1);
  };
  std::vector<double> targets(32, 10.0);
  const SearchSpace space{1, 1022, Slope::kDecreasing};
  absl::StatusOr<SearchResult> r = BinarySearch(Measure(tau), targets, space);
  ASSERT_TRUE(r.ok()) << r.status();
  for (size_t i = 0; i < targets.size(); ++i) {
    EXPECT_NEAR(std::abs(r->measured[i] - 10.0),
                BestPossibleError(tau, i, 10.0, space), 1e-12);
    EXPECT_LT(std::abs(r->measured[i] - 10.0) / 10.0, 0.003);
  }
}

TEST(BinarySearchTest, SmallSpaceAndSingleCode) {
  auto f = [](size_t, int32_t code) { return 8.0 * code; };  // ISI [ns]
  const SearchSpace space{0, 255, Slope::kIncreasing};
  absl::StatusOr<SearchResult> r =
      BinarySearch(Measure(f), std::vector<double>{2000.0, 40.0, 0.0}, space);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->codes, (std::vector<int32_t>{250, 5, 0}));

  absl::StatusOr<SearchResult> one =
      BinarySearch(Measure(f), std::vector<double>{100.0}, {7, 7});
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(one->codes[0], 7);
  EXPECT_EQ(one->measurements, 1);
}

TEST(BinarySearchTest, UnreachableTargetsEndAtTheBoundary) {
  auto f = [](size_t, int32_t code) { return 100.0 + 0.1 * code; };
  const SearchSpace space{0, 1022, Slope::kIncreasing};
  absl::StatusOr<SearchResult> r =
      BinarySearch(Measure(f), std::vector<double>{50.0, 500.0}, space);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->codes[0], 0);
  EXPECT_EQ(r->codes[1], 1022);
}

TEST(BinarySearchTest, ToleratesMeasurementNoise) {
  // Gaussian-ish noise of 0.3 code-equivalents from a fixed hash: the result
  // is within 2 codes of the noise-free optimum.
  uint64_t state = 12345;
  auto noise = [&state]() {
    double s = 0.0;
    for (int k = 0; k < 4; ++k) {
      state = state * 6364136223846793005ull + 1442695040888963407ull;
      s += static_cast<double>(state >> 11) / 9007199254740992.0 - 0.5;
    }
    return s * std::sqrt(3.0);  // unit variance
  };
  MeasureFunction noisy = [&](absl::Span<const int32_t> codes)
      -> absl::StatusOr<std::vector<double>> {
    std::vector<double> v(codes.size());
    for (size_t i = 0; i < codes.size(); ++i) {
      v[i] = 0.25 * codes[i] + 3.0 * i + 0.3 * 0.25 * noise();
    }
    return v;
  };
  std::vector<double> targets(16, 120.0);
  absl::StatusOr<SearchResult> r =
      BinarySearch(noisy, targets, {0, 1022, Slope::kIncreasing});
  ASSERT_TRUE(r.ok());
  for (size_t i = 0; i < targets.size(); ++i) {
    const double ideal = (120.0 - 3.0 * i) / 0.25;
    EXPECT_NEAR(r->codes[i], ideal, 2.0) << "neuron " << i;
  }
}

TEST(BinarySearchTest, NoisyStartSpreadsTheFirstCodes) {
  auto f = [](size_t, int32_t code) { return 1.0 * code; };
  std::vector<double> targets(50, 300.0);
  int calls = 0;
  std::vector<int32_t> first;
  BinarySearchOptions plain;
  ASSERT_TRUE(BinarySearch(Measure(f, &calls, &first), targets,
                           {0, 1022, Slope::kIncreasing}, plain)
                  .ok());
  EXPECT_TRUE(std::all_of(first.begin(), first.end(),
                          [](int32_t c) { return c == 511; }));
  BinarySearchOptions noisy;
  noisy.initial_noise = 5;
  noisy.seed = 3;
  calls = 0;
  absl::StatusOr<SearchResult> r =
      BinarySearch(Measure(f, &calls, &first), targets,
                   {0, 1022, Slope::kIncreasing}, noisy);
  ASSERT_TRUE(r.ok());
  const auto [lo, hi] = std::minmax_element(first.begin(), first.end());
  EXPECT_GE(*lo, 506);
  EXPECT_LE(*hi, 516);
  EXPECT_GT(*hi - *lo, 4);                       // actually spread
  for (int32_t c : r->codes) EXPECT_EQ(c, 300);  // and still exact
}

TEST(BinarySearchTest, PassesMeasurementErrorsOnAndChecksSizes) {
  MeasureFunction failing =
      [](absl::Span<const int32_t>) -> absl::StatusOr<std::vector<double>> {
    return absl::ResourceExhaustedError("chip busy");
  };
  absl::StatusOr<SearchResult> r =
      BinarySearch(failing, std::vector<double>{1.0}, {});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted);

  MeasureFunction short_answer =
      [](absl::Span<const int32_t>) -> absl::StatusOr<std::vector<double>> {
    return std::vector<double>{1.0};
  };
  r = BinarySearch(short_answer, std::vector<double>{1.0, 2.0}, {});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  r = BinarySearch(short_answer, std::vector<double>{1.0}, {5, 4});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
}

// ---- Targets
// -----------------------------------------------------------------

TEST(TargetsTest, DefaultsAreCalix) {
  absl::StatusOr<ResolvedTargets> t =
      ResolveTargets(hxemu::v1::CalibrationTargets());
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->leak_cadc, 80);
  EXPECT_EQ(t->reset_cadc, 70);
  EXPECT_EQ(t->threshold_cadc, 125);
  EXPECT_EQ(t->tau_mem_us, 10);
  EXPECT_EQ(t->tau_syn_exc_us, 10);
  EXPECT_EQ(t->tau_syn_inh_us, 10);
  EXPECT_EQ(t->i_synin_gm_exc, 500);
  EXPECT_EQ(t->i_synin_gm_inh, 500);
  EXPECT_EQ(t->membrane_capacitance, 63);
  EXPECT_EQ(t->refractory_time_us, 2);
  EXPECT_EQ(t->holdoff_time_us, 0);
  EXPECT_EQ(t->synapse_dac_bias, 600);
  EXPECT_FALSE(t->e_coba_reversal_exc.has_value());
}

TEST(TargetsTest, ZeroMeansDefaultWhereZeroIsOutOfRange) {
  hxemu::v1::CalibrationTargets in;
  in.set_leak(0);
  in.set_tau_mem_us(0);
  in.set_membrane_capacitance(0);  // 0 is a valid capacitance
  absl::StatusOr<ResolvedTargets> t = ResolveTargets(in);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->leak_cadc, 80);
  EXPECT_EQ(t->tau_mem_us, 10);
  EXPECT_EQ(t->membrane_capacitance, 0);
}

TEST(TargetsTest, OutOfRangeNamesFieldAndRange) {
  struct Case {
    void (*set)(hxemu::v1::CalibrationTargets&);
    const char* field;
    const char* range;
  };
  const Case cases[] = {
      {[](auto& t) { t.set_leak(200); }, "targets.leak", "50..160"},
      {[](auto& t) { t.set_reset(49.5); }, "targets.reset", "50..160"},
      {[](auto& t) { t.set_threshold(221); }, "targets.threshold", "50..220"},
      {[](auto& t) { t.set_tau_mem_us(0.4); }, "targets.tau_mem_us", "0.5..60"},
      {[](auto& t) { t.set_tau_syn_exc_us(31); }, "targets.tau_syn_exc_us",
       "0.3..30"},
      {[](auto& t) { t.set_tau_syn_inh_us(-1); }, "targets.tau_syn_inh_us",
       "0.3..30"},
      {[](auto& t) { t.set_i_synin_gm_exc(801); }, "targets.i_synin_gm_exc",
       "30..800"},
      {[](auto& t) { t.set_i_synin_gm_inh(29); }, "targets.i_synin_gm_inh",
       "30..800"},
      {[](auto& t) { t.set_membrane_capacitance(64); },
       "targets.membrane_capacitance", "0..63"},
      {[](auto& t) { t.set_refractory_time_us(0.03); },
       "targets.refractory_time_us", "0.04..32"},
      {[](auto& t) { t.set_holdoff_time_us(4.5); }, "targets.holdoff_time_us",
       "0..4"},
      {[](auto& t) { t.set_synapse_dac_bias(1023); },
       "targets.synapse_dac_bias", "30..1022"},
      {[](auto& t) { t.set_leak(std::nan("")); }, "targets.leak", "50..160"},
      {[](auto& t) { t.set_e_coba_reference_exc(20); },
       "targets.e_coba_reference_exc", "60..160"},
  };
  for (const Case& c : cases) {
    hxemu::v1::CalibrationTargets in;
    c.set(in);
    absl::StatusOr<ResolvedTargets> t = ResolveTargets(in);
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument) << c.field;
    EXPECT_THAT(t.status().message(), HasSubstr(c.field));
    EXPECT_THAT(t.status().message(), HasSubstr(c.range));
  }
}

TEST(TargetsTest, SynapseDacBiasInRangeIsAccepted) {
  for (int32_t bias : {30, 400, 1000, 1022}) {
    hxemu::v1::CalibrationTargets in;
    in.set_synapse_dac_bias(bias);
    absl::StatusOr<ResolvedTargets> t = ResolveTargets(in);
    ASSERT_TRUE(t.ok()) << t.status();
    EXPECT_EQ(t->synapse_dac_bias, bias);
  }
  hxemu::v1::CalibrationTargets low;
  low.set_synapse_dac_bias(29);
  EXPECT_EQ(ResolveTargets(low).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(TargetsTest, CobaReferenceDefaultsToMidpointAndNeedsReversal) {
  hxemu::v1::CalibrationTargets coba;
  coba.set_e_coba_reversal_exc(200);
  absl::StatusOr<ResolvedTargets> t = ResolveTargets(coba);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->e_coba_reference_exc, 0.5 * (80 + 125));
  EXPECT_FALSE(t->e_coba_reversal_inh.has_value());
  EXPECT_FALSE(t->e_coba_reference_inh.has_value());
  hxemu::v1::CalibrationTargets lonely;
  lonely.set_e_coba_reference_inh(100);
  absl::Status s = ResolveTargets(lonely).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("targets.e_coba_reference_inh: needs"));
  hxemu::v1::CalibrationTargets inf;
  inf.set_e_coba_reversal_inh(std::numeric_limits<double>::infinity());
  EXPECT_EQ(ResolveTargets(inf).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(TargetsTest, ToProtoSetsEveryFieldAndRoundTrips) {
  hxemu::v1::CalibrationTargets in;
  in.set_tau_mem_us(6);
  in.set_threshold(150);
  absl::StatusOr<ResolvedTargets> t = ResolveTargets(in);
  ASSERT_TRUE(t.ok());
  const hxemu::v1::CalibrationTargets p = ToProto(*t);
  EXPECT_TRUE(p.has_leak() && p.has_reset() && p.has_holdoff_time_us() &&
              p.has_membrane_capacitance() && p.has_synapse_dac_bias());
  EXPECT_EQ(p.tau_mem_us(), 6);
  EXPECT_EQ(p.threshold(), 150);
  absl::StatusOr<ResolvedTargets> again = ResolveTargets(p);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(ToProto(*again).SerializeAsString(), p.SerializeAsString());
}

// ---- Cache
// -------------------------------------------------------------------

class CacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ =
        std::filesystem::temp_directory_path() /
        ("hxemu_calibration_cache_test_" +
         std::to_string(::testing::UnitTest::GetInstance()->random_seed()) +
         "_" + ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  static hxemu::v1::Calibration Sample(uint32_t chip, double leak) {
    hxemu::v1::CalibrationTargets in;
    in.set_leak(leak);
    hxemu::v1::Calibration cal;
    cal.set_chip_id(chip);
    *cal.mutable_targets() = ToProto(*ResolveTargets(in));
    cal.set_emulator_version("v-test");
    hxemu::v1::CircuitCalibration* cc = cal.add_circuits();
    cc->set_circuit(3);
    cc->set_success(true);
    hxemu::v1::NeuronParameter* np = cc->add_parameters();
    np->set_name("leak_v_leak");
    np->add_values(512);
    return cal;
  }

  std::filesystem::path dir_;
};

TEST_F(CacheTest, StoresAndFindsByChipTargetsAndVersion) {
  CalibrationCache cache(dir_.string());
  const hxemu::v1::Calibration cal = Sample(2, 90);
  EXPECT_FALSE(cache.Load(2, cal.targets(), "v-test").has_value());
  ASSERT_TRUE(cache.Store(cal).ok());
  std::optional<hxemu::v1::Calibration> hit =
      cache.Load(2, cal.targets(), "v-test");
  ASSERT_TRUE(hit.has_value());
  EXPECT_EQ(hit->SerializeAsString(), cal.SerializeAsString());
  // Any other chip, targets or version is a miss.
  EXPECT_FALSE(cache.Load(3, cal.targets(), "v-test").has_value());
  EXPECT_FALSE(cache.Load(2, Sample(2, 91).targets(), "v-test").has_value());
  EXPECT_FALSE(cache.Load(2, cal.targets(), "v-other").has_value());
  EXPECT_NE(CalibrationCache::Key(2, cal.targets(), "v-test"),
            CalibrationCache::Key(2, Sample(2, 91).targets(), "v-test"));
}

TEST_F(CacheTest, IgnoresCorruptAndForeignFiles) {
  CalibrationCache cache(dir_.string());
  const hxemu::v1::Calibration cal = Sample(1, 80);
  ASSERT_TRUE(cache.Store(cal).ok());
  const std::string path = cache.PathFor(1, cal.targets(), "v-test");
  // A file of another chip under this key's name is not served.
  hxemu::v1::Calibration foreign = Sample(5, 80);
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    foreign.SerializeToOstream(&out);
  }
  EXPECT_FALSE(cache.Load(1, cal.targets(), "v-test").has_value());
  {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << "\xff\xff\xff not a protobuf";
  }
  EXPECT_FALSE(cache.Load(1, cal.targets(), "v-test").has_value());
}

TEST_F(CacheTest, UnwritableDirectoryIsAnErrorNotACrash) {
  // A directory below a regular file can never be created.
  std::filesystem::create_directories(dir_);
  const std::filesystem::path file = dir_ / "plain_file";
  { std::ofstream(file) << "x"; }
  CalibrationCache cache((file / "sub").string());
  const absl::Status s = cache.Store(Sample(0, 80));
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_FALSE(cache.Load(0, Sample(0, 80).targets(), "v-test").has_value());
  // Without a directory nothing is stored and nothing found.
  CalibrationCache none("");
  EXPECT_TRUE(none.Store(Sample(0, 80)).ok());
  EXPECT_FALSE(none.Load(0, Sample(0, 80).targets(), "v-test").has_value());
}

// ---- ApplyInitialConfig (contract C3)
// -----------------------------------------

hxemu::v1::Calibration TwoCircuitCalibration() {
  hxemu::v1::Calibration cal;
  cal.set_chip_id(7);
  for (uint32_t c : {1u, 11u}) {
    hxemu::v1::CircuitCalibration* cc = cal.add_circuits();
    cc->set_circuit(c);
    cc->set_success(true);
    hxemu::v1::NeuronParameter* leak = cc->add_parameters();
    leak->set_name("leak_v_leak");
    leak->add_values(400 + static_cast<int32_t>(c));
    hxemu::v1::NeuronParameter* th = cc->add_parameters();
    th->set_name("threshold_v_threshold");
    th->add_values(300);
  }
  return cal;
}

const hxemu::v1::NeuronParameter* Find(const hxemu::v1::Population& pop,
                                       const std::string& name) {
  for (const auto& p : pop.parameters()) {
    if (p.name() == name) return &p;
  }
  return nullptr;
}

TEST(ApplyInitialConfigTest, WithoutCalibrationNothingChanges) {
  hxemu::v1::Experiment e;
  e.set_runtime_ms(0.1);
  e.add_populations()->set_size(2);
  e.mutable_populations(0)->set_cell_type(hxemu::v1::CELL_TYPE_HX_NEURON);
  absl::StatusOr<hxemu::v1::Experiment> out = ApplyInitialConfig(e);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->SerializeAsString(), e.SerializeAsString());
}

TEST(ApplyInitialConfigTest,
     PerNeuronValuesExplicitOnesWinChipFromCalibration) {
  hxemu::v1::Experiment e;
  e.set_runtime_ms(0.1);
  // Population 0: neurons on circuits 0, 1, 2 (lowest free); population 1
  // (spike source) has no circuits; population 2 on 11 and 12 with an
  // explicit threshold.
  hxemu::v1::Population* a = e.add_populations();
  a->set_size(3);
  a->set_cell_type(hxemu::v1::CELL_TYPE_HX_NEURON);
  hxemu::v1::Population* src = e.add_populations();
  src->set_size(1);
  src->set_cell_type(hxemu::v1::CELL_TYPE_SPIKE_SOURCE_ARRAY);
  src->mutable_spike_source_array()->add_spike_times()->add_times_ms(0.01);
  hxemu::v1::Population* b = e.add_populations();
  b->set_size(2);
  b->set_cell_type(hxemu::v1::CELL_TYPE_HX_NEURON);
  b->add_circuits(11);
  b->add_circuits(12);
  hxemu::v1::NeuronParameter* th = b->add_parameters();
  th->set_name("threshold_v_threshold");
  th->add_values(123);
  *e.mutable_initial_config() = TwoCircuitCalibration();

  absl::StatusOr<hxemu::v1::Experiment> out = ApplyInitialConfig(e);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_FALSE(out->has_initial_config());
  ASSERT_TRUE(out->has_chip_id());
  EXPECT_EQ(out->chip_id(), 7u);
  // Circuit 1 is calibrated, 0 and 2 keep the table default (0).
  const auto* leak_a = Find(out->populations(0), "leak_v_leak");
  ASSERT_NE(leak_a, nullptr);
  EXPECT_THAT(leak_a->values(), ::testing::ElementsAre(0, 401, 0));
  const auto* th_a = Find(out->populations(0), "threshold_v_threshold");
  ASSERT_NE(th_a, nullptr);
  EXPECT_THAT(th_a->values(), ::testing::ElementsAre(0, 300, 0));
  EXPECT_EQ(out->populations(1).parameters_size(), 0);
  // The explicit threshold wins; the leak comes from circuit 11.
  const auto* th_b = Find(out->populations(2), "threshold_v_threshold");
  ASSERT_NE(th_b, nullptr);
  EXPECT_THAT(th_b->values(), ::testing::ElementsAre(123));
  const auto* leak_b = Find(out->populations(2), "leak_v_leak");
  ASSERT_NE(leak_b, nullptr);
  EXPECT_THAT(leak_b->values(), ::testing::ElementsAre(411, 0));
  // The rewritten experiment is a valid one.
  EXPECT_TRUE(
      emulator::ValidateExperiment(*out, emulator::ExperimentLimits{}).ok());

  // An explicit other chip is kept.
  e.set_chip_id(3);
  out = ApplyInitialConfig(e);
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(out->chip_id(), 3u);
}

TEST(ApplyInitialConfigTest, MalformedCalibrationNamesTheField) {
  hxemu::v1::Experiment e;
  e.set_runtime_ms(0.1);
  e.add_populations()->set_size(1);
  e.mutable_populations(0)->set_cell_type(hxemu::v1::CELL_TYPE_HX_NEURON);
  struct Case {
    void (*mutate)(hxemu::v1::Calibration&);
    const char* message;
  };
  const Case cases[] = {
      {[](auto& c) { c.mutable_circuits(1)->set_circuit(512); },
       "initial_config.circuits[1].circuit: 512 is out of range 0..511"},
      {[](auto& c) { c.mutable_circuits(1)->set_circuit(1); },
       "initial_config.circuits[1].circuit: circuit 1 appears twice"},
      {[](auto& c) {
         c.mutable_circuits(0)->mutable_parameters(0)->set_name("nope");
       },
       "initial_config.circuits[0].parameters[0].name: unknown parameter"},
      {[](auto& c) {
         c.mutable_circuits(0)->mutable_parameters(0)->add_values(1);
       },
       "must have exactly 1 value"},
      {[](auto& c) {
         c.mutable_circuits(0)->mutable_parameters(1)->set_values(0, 1023);
       },
       "[threshold_v_threshold].values[0]: 1023 is out of range 0..1022"},
  };
  for (const Case& c : cases) {
    hxemu::v1::Calibration cal = TwoCircuitCalibration();
    c.mutate(cal);
    *e.mutable_initial_config() = cal;
    absl::StatusOr<hxemu::v1::Experiment> out = ApplyInitialConfig(e);
    EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(out.status().message(), HasSubstr(c.message));
  }
  // Placement errors come through as they are.
  *e.mutable_initial_config() = TwoCircuitCalibration();
  e.mutable_populations(0)->set_size(513);
  EXPECT_EQ(ApplyInitialConfig(e).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// ---- Calibration of an emulated chip
// -------------------------------------------

// A few circuits of both hemispheres and column parities (4 MADC pairs):
// enough for spreads, small enough for sanitizer builds.
const std::vector<uint32_t> kCircuits = {0, 1, 2, 3, 256, 257, 300, 301};

std::vector<double> Get(const std::vector<hxemu::v1::CircuitMeasurement>& m,
                        double (hxemu::v1::CircuitMeasurement::*get)() const) {
  std::vector<double> v;
  for (const auto& x : m) v.push_back((x.*get)());
  return v;
}

class ChipCalibrationTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    chip_ = new emulator::Chip(0);
    CalibrationOptions options;
    options.circuits = kCircuits;
    absl::StatusOr<hxemu::v1::Calibration> cal =
        Calibrate(*chip_, hxemu::v1::CalibrationTargets(), options);
    ASSERT_TRUE(cal.ok()) << cal.status();
    calibration_ = new hxemu::v1::Calibration(*std::move(cal));
  }
  static void TearDownTestSuite() {
    delete calibration_;
    delete chip_;
  }
  static emulator::Chip* chip_;
  static hxemu::v1::Calibration* calibration_;
};
emulator::Chip* ChipCalibrationTest::chip_ = nullptr;
hxemu::v1::Calibration* ChipCalibrationTest::calibration_ = nullptr;

TEST_F(ChipCalibrationTest, ResultDescribesEveryCircuit) {
  const hxemu::v1::Calibration& cal = *calibration_;
  EXPECT_EQ(cal.chip_id(), 0u);
  EXPECT_EQ(cal.emulator_version(), EmulatorVersion());
  EXPECT_EQ(cal.targets().leak(), 80);
  ASSERT_EQ(cal.circuits_size(), static_cast<int>(kCircuits.size()));
  EXPECT_EQ(cal.num_failed(), 0u) << cal.warning();
  EXPECT_EQ(cal.warning(), "");
  for (int i = 0; i < cal.circuits_size(); ++i) {
    const auto& cc = cal.circuits(i);
    EXPECT_EQ(cc.circuit(), kCircuits[i]);
    EXPECT_TRUE(cc.success());
    EXPECT_EQ(cc.parameters_size(),
              static_cast<int>(CalibratedParameters().size()));
    EXPECT_NEAR(cc.measured().leak(), 80, 1.0);
    EXPECT_NEAR(cc.measured().tau_mem_us(), 10, 0.2);
  }
}

TEST_F(ChipCalibrationTest, SpreadsShrinkToTheTargetsAndWrongChipIsWorse) {
  const hxemu::v1::Calibration& cal = *calibration_;
  const std::vector<ParameterValues> after_cfg =
      ConfigsFromCalibration(cal, kCircuits);
  // Uncalibrated: the median calibrated value of every parameter, shared.
  std::vector<ParameterValues> before_cfg = after_cfg;
  for (emulator::NeuronParameter p : CalibratedParameters()) {
    std::vector<int32_t> v;
    for (const ParameterValues& c : after_cfg) v.push_back(At(c, p));
    std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
    for (ParameterValues& c : before_cfg) At(c, p) = v[v.size() / 2];
  }
  const auto before = MeasureCircuits(*chip_, kCircuits, before_cfg,
                                      cal.targets(), {.seed = 501});
  const auto after = MeasureCircuits(*chip_, kCircuits, after_cfg,
                                     cal.targets(), {.seed = 502});
  emulator::Chip chip_b(1);
  const auto wrong = MeasureCircuits(chip_b, kCircuits, after_cfg,
                                     cal.targets(), {.seed = 503});
  ASSERT_TRUE(before.ok()) << before.status();
  ASSERT_TRUE(after.ok()) << after.status();
  ASSERT_TRUE(wrong.ok()) << wrong.status();
  using M = hxemu::v1::CircuitMeasurement;
  struct Potential {
    const char* name;
    double (M::*get)() const;
    double target;
  };
  for (const Potential& p :
       {Potential{"leak", &M::leak, 80}, Potential{"reset", &M::reset, 70},
        Potential{"threshold", &M::threshold, 125}}) {
    const Spread b = ComputeSpread(Get(*before, p.get));
    const Spread a = ComputeSpread(Get(*after, p.get));
    const Spread w = ComputeSpread(Get(*wrong, p.get));
    SCOPED_TRACE(p.name);
    EXPECT_LE(a.sd, 1.0);  // [CADC LSB]
    EXPECT_NEAR(a.mean, p.target, 1.0);
    // Raw mismatch, and the other chip's mismatch (sd over 8 circuits:
    // typically 4-6 LSB; the bounds leave room for other mismatch draws).
    EXPECT_GT(b.sd, 1.5);
    EXPECT_GT(b.sd, 3 * a.sd);
    EXPECT_GT(w.sd, 1.5);
    EXPECT_GT(w.sd, 3 * a.sd);
  }
  struct Tau {
    const char* name;
    double (M::*get)() const;
  };
  for (const Tau& t :
       {Tau{"tau_mem", &M::tau_mem_us}, Tau{"tau_syn_exc", &M::tau_syn_exc_us},
        Tau{"tau_syn_inh", &M::tau_syn_inh_us}}) {
    const Spread b = ComputeSpread(Get(*before, t.get));
    const Spread a = ComputeSpread(Get(*after, t.get));
    const Spread w = ComputeSpread(Get(*wrong, t.get));
    SCOPED_TRACE(t.name);
    EXPECT_LE(a.sd / a.mean, 0.02);
    EXPECT_NEAR(a.mean, 10.0, 0.2);
    EXPECT_GT(b.sd / b.mean, 0.03);  // typically 5-10 %
    EXPECT_GT(w.sd / w.mean, 0.03);
    EXPECT_GT(b.sd, 3 * a.sd);
    EXPECT_GT(w.sd, 3 * a.sd);
  }
}

TEST_F(ChipCalibrationTest, AppliedThroughInitialConfigNeuronsRestAtTarget) {
  // An experiment as a user writes it: no parameters but the ones the
  // observation needs, the calibration as initial_config.
  hxemu::v1::Experiment e;
  e.set_runtime_ms(0.06);
  e.set_seed(9);
  hxemu::v1::Population* pop = e.add_populations();
  pop->set_size(static_cast<uint32_t>(kCircuits.size()));
  pop->set_cell_type(hxemu::v1::CELL_TYPE_HX_NEURON);
  for (uint32_t c : kCircuits) pop->add_circuits(c);
  hxemu::v1::NeuronParameter* off = pop->add_parameters();
  off->set_name("threshold_enable");
  off->add_values(0);
  for (int k = 0; k < 8; ++k) e.mutable_cadc()->add_times_ms(0.02 + 0.005 * k);
  *e.mutable_initial_config() = *calibration_;
  absl::StatusOr<hxemu::v1::Experiment> applied = ApplyInitialConfig(e);
  ASSERT_TRUE(applied.ok()) << applied.status();
  absl::StatusOr<hxemu::v1::Result> r = chip_->Run(
      *applied, emulator::ExperimentLimits{}, emulator::RunControl{});
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->cadc_circuits_size(), static_cast<int>(kCircuits.size()));
  for (int j = 0; j < r->cadc_circuits_size(); ++j) {
    double mean = 0.0;
    for (const auto& read : r->cadc_reads()) mean += read.codes(j);
    mean /= r->cadc_reads_size();
    EXPECT_NEAR(mean, 80.0, 1.5) << "circuit " << r->cadc_circuits(j);
  }
}

TEST(CalibrateTest, UnreachableTargetFailsHonestlyWithWarning) {
  // The emulator's refractory counter runs at 8 ns: 255 counts = 2.04 us.
  emulator::Chip chip(0);
  hxemu::v1::CalibrationTargets targets;
  targets.set_refractory_time_us(10);
  CalibrationOptions options;
  options.circuits = {4, 5};
  absl::StatusOr<hxemu::v1::Calibration> cal =
      Calibrate(chip, targets, options);
  ASSERT_TRUE(cal.ok()) << cal.status();
  EXPECT_EQ(cal->num_failed(), 2u);
  EXPECT_EQ(cal->warning(), "calibration failed for 2 neurons");
  for (const auto& cc : cal->circuits()) {
    EXPECT_FALSE(cc.success());
    EXPECT_THAT(cc.failed_targets(), ::testing::Contains("refractory_time_us"));
    EXPECT_NEAR(cc.measured().refractory_time_us(), 2.04, 0.01);
  }
}

TEST(CalibrateTest, CobaReachesReversalPotentialsOrCalibratesLower) {
  // Inhibitory reversal 40 CADC LSB (0.26 V) is reachable; excitatory 300
  // (CalibHXNeuronCoba's default, ~1.3 V) would need v_rev_coba codes above
  // 1022: as calix, it is calibrated at the lower 170 LSB. (The emulator's
  // COBA path is its slow non-linear one: two circuits only.)
  using NP = emulator::NeuronParameter;
  emulator::Chip chip(0);
  hxemu::v1::CalibrationTargets targets;
  targets.set_e_coba_reversal_exc(300);
  targets.set_e_coba_reversal_inh(40);
  CalibrationOptions options;
  options.circuits = {6, 7};
  absl::StatusOr<hxemu::v1::Calibration> cal =
      Calibrate(chip, targets, options);
  ASSERT_TRUE(cal.ok()) << cal.status();
  EXPECT_EQ(cal->targets().e_coba_reference_inh(), 102.5);
  EXPECT_EQ(cal->targets().e_coba_reversal_exc(), 300);
  EXPECT_EQ(cal->num_failed(), 0u) << cal->warning();
  // The lowered target is said, though every circuit succeeds.
  EXPECT_EQ(cal->warning(),
            "e_coba_reversal_exc 300 CADC LSB lies beyond the emulated chip's "
            "range, calibrated at 170 instead");
  // A reachable excitatory target below it needs smaller codes.
  hxemu::v1::CalibrationTargets low;
  low.set_e_coba_reversal_exc(150);
  absl::StatusOr<hxemu::v1::Calibration> cal_low =
      Calibrate(chip, low, options);
  ASSERT_TRUE(cal_low.ok()) << cal_low.status();
  EXPECT_EQ(cal_low->num_failed(), 0u) << cal_low->warning();
  EXPECT_EQ(cal_low->warning(), "");
  for (int i = 0; i < cal->circuits_size(); ++i) {
    const auto& cc = cal->circuits(i);
    EXPECT_TRUE(cc.success());
    EXPECT_NEAR(cc.measured().e_coba_reversal_inh(), 40, 3.0);
    EXPECT_NEAR(cc.measured().e_coba_reversal_exc(), 170, 3.0);
    EXPECT_NEAR(cal_low->circuits(i).measured().e_coba_reversal_exc(), 150,
                3.0);
    const std::vector<ParameterValues> cfg =
        ConfigsFromCalibration(*cal, {cc.circuit()});
    const std::vector<ParameterValues> cfg_low =
        ConfigsFromCalibration(*cal_low, {cc.circuit()});
    EXPECT_EQ(At(cfg[0], NP::inhibitory_input_enable_coba_mode), 1);
    EXPECT_EQ(At(cfg[0], NP::excitatory_input_enable_coba_mode), 1);
    EXPECT_GT(At(cfg[0], NP::excitatory_input_v_rev_coba),
              At(cfg_low[0], NP::excitatory_input_v_rev_coba) + 20);
    EXPECT_LT(At(cfg[0], NP::excitatory_input_v_rev_coba), 1022);
  }
}

TEST(CalibrateTest, CobaPynnDefaultsSucceed) {
  // CalibHXNeuronCoba's defaults: e_rev_E 300 is calibrated at 170 with the
  // reference (midpoint 135) interpolated towards the leak; at 135 no
  // i_bias_coba would reach the CUBA step 35 LSB below the lowered reversal.
  emulator::Chip chip(0);
  hxemu::v1::CalibrationTargets t;
  t.set_leak(110);
  t.set_reset(100);
  t.set_threshold(160);
  t.set_e_coba_reversal_exc(300);
  t.set_e_coba_reversal_inh(30);
  t.set_i_synin_gm_exc(180);
  t.set_i_synin_gm_inh(250);
  t.set_synapse_dac_bias(400);
  CalibrationOptions options;
  options.circuits = {0, 57, 130, 255, 388, 511};
  absl::StatusOr<hxemu::v1::Calibration> cal = Calibrate(chip, t, options);
  ASSERT_TRUE(cal.ok()) << cal.status();
  EXPECT_EQ(cal->num_failed(), 0u) << cal->warning();
  for (const auto& cc : cal->circuits()) {
    EXPECT_NEAR(cc.measured().e_coba_reversal_exc(), 170, 3.0);
    EXPECT_NEAR(cc.measured().e_coba_reversal_inh(), 30, 3.0);
  }
}

TEST(CalibrateTest, SynapseDacBiasCalibratesAndReachesTheJob) {
  // CalibHXNeuronCoba's defaults: bias 400, gm 180 / 250 (CUBA here: the
  // COBA path is the emulator's slow one). Every measurement runs under the
  // bias, with stimulus weights scaled by 600 / 400.
  emulator::Chip chip(0);
  hxemu::v1::CalibrationTargets targets;
  targets.set_synapse_dac_bias(400);
  targets.set_i_synin_gm_exc(180);
  targets.set_i_synin_gm_inh(250);
  CalibrationOptions options;
  options.circuits = {8, 9};
  absl::StatusOr<hxemu::v1::Calibration> cal =
      Calibrate(chip, targets, options);
  ASSERT_TRUE(cal.ok()) << cal.status();
  EXPECT_EQ(cal->num_failed(), 0u) << cal->warning();
  EXPECT_EQ(cal->targets().synapse_dac_bias(), 400);
  // The same targets at the nominal bias: the test steps, whose weights
  // are scaled by 600 / bias, come out the same size only if the runs
  // really carry the bias (without it they would be 1.5x larger).
  targets.clear_synapse_dac_bias();
  absl::StatusOr<hxemu::v1::Calibration> nominal =
      Calibrate(chip, targets, options);
  ASSERT_TRUE(nominal.ok()) << nominal.status();
  ASSERT_EQ(nominal->circuits_size(), cal->circuits_size());
  for (int i = 0; i < cal->circuits_size(); ++i) {
    const hxemu::v1::CircuitCalibration& cc = cal->circuits(i);
    const hxemu::v1::CircuitMeasurement& at600 =
        nominal->circuits(i).measured();
    EXPECT_TRUE(cc.success());
    EXPECT_GT(cc.measured().synin_exc(), 10.0);
    EXPECT_NEAR(cc.measured().synin_exc() / at600.synin_exc(), 1.0, 0.1);
    EXPECT_NEAR(cc.measured().synin_inh() / at600.synin_inh(), 1.0, 0.1);
  }

  // ApplyInitialConfig hands the bias to the job unless the experiment sets
  // its own.
  hxemu::v1::Experiment e;
  hxemu::v1::Population* pop = e.add_populations();
  pop->set_size(2);
  pop->set_cell_type(hxemu::v1::CELL_TYPE_HX_NEURON);
  pop->add_circuits(8);
  pop->add_circuits(9);
  e.set_runtime_ms(0.05);
  *e.mutable_initial_config() = *cal;
  absl::StatusOr<hxemu::v1::Experiment> out = ApplyInitialConfig(e);
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_TRUE(out->has_synapse_dac_bias());
  EXPECT_EQ(out->synapse_dac_bias(), 400u);
  e.set_synapse_dac_bias(700);
  out = ApplyInitialConfig(e);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->synapse_dac_bias(), 700u);
  // An out-of-range bias in a hand-made initial_config names the field.
  e.clear_synapse_dac_bias();
  e.mutable_initial_config()->mutable_targets()->set_synapse_dac_bias(20);
  out = ApplyInitialConfig(e);
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(out.status().message(),
              HasSubstr("initial_config.targets.synapse_dac_bias"));
  EXPECT_THAT(out.status().message(), HasSubstr("30..1022"));
}

TEST(CalibrateTest, RejectsBadInputAndHonoursCancel) {
  emulator::Chip chip(0);
  hxemu::v1::CalibrationTargets bad;
  bad.set_threshold(300);
  absl::Status s = Calibrate(chip, bad).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("targets.threshold: 300"));

  CalibrationOptions options;
  options.circuits = {3, 512};
  s = Calibrate(chip, {}, options).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("circuits[1]: 512 is out of range"));
  options.circuits = {3, 3};
  EXPECT_EQ(Calibrate(chip, {}, options).status().code(),
            absl::StatusCode::kInvalidArgument);

  std::atomic<bool> cancel{true};
  options.circuits = {3};
  options.cancel_requested = &cancel;
  EXPECT_EQ(Calibrate(chip, {}, options).status().code(),
            absl::StatusCode::kCancelled);
}

}  // namespace
}  // namespace hxemu::calibration

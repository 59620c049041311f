// Benchmark of the calibration library: wall time of a full-chip default
// calibration (target <= 10 s on one core; calix needs about five minutes on
// hardware) and the spread of the calibrated quantities over the circuits
// before and after calibration, measured with the calibration's own
// protocols (hxemu::calibration::MeasureCircuits).
//
// "Before" is the best uncalibrated setting: every circuit gets the median
// of the calibrated codes (one shared value per parameter, so only the
// mismatch spreads the circuits). "After" is the calibration applied to its
// own chip; "wrong chip" is the same calibration applied to the next chip.
//
// Usage: calibration_bench [--circuits=N] [--chip=ID]   (N = 512 by default)
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <vector>

#include "hxemu/calibration/calibrate.h"
#include "hxemu/calibration/measurement.h"
#include "hxemu/emulator/chip.h"
#include "hxemu/v1/calibration.pb.h"

namespace hxemu::calibration {
namespace {

using ::hxemu::v1::CircuitMeasurement;

struct Column {
  const char* name;
  const char* unit;
  double (CircuitMeasurement::*get)() const;
  double target;
};

std::vector<double> Values(const std::vector<CircuitMeasurement>& m,
                           double (CircuitMeasurement::*get)() const) {
  std::vector<double> v;
  for (const CircuitMeasurement& x : m) v.push_back((x.*get)());
  return v;
}

void PrintSpread(const char* label, const Spread& s, bool relative) {
  if (relative) {
    std::printf("  %-10s mean %8.3f  sd %7.3f (%5.2f %%)  range %8.3f..%8.3f\n",
                label, s.mean, s.sd, 100.0 * s.sd / s.mean, s.min, s.max);
  } else {
    std::printf("  %-10s mean %8.3f  sd %7.3f            range %8.3f..%8.3f\n",
                label, s.mean, s.sd, s.min, s.max);
  }
}

int Main(int argc, char** argv) {
  int circuits_n = 512;
  uint32_t chip_id = 0;
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--circuits=", 11) == 0) {
      circuits_n = std::clamp(std::atoi(argv[i] + 11), 1, 512);
    } else if (std::strncmp(argv[i], "--chip=", 7) == 0) {
      chip_id = static_cast<uint32_t>(std::atoi(argv[i] + 7));
    } else {
      std::fprintf(stderr, "usage: %s [--circuits=N] [--chip=ID]\n", argv[0]);
      return 2;
    }
  }
  std::vector<uint32_t> circuits;
  for (int c = 0; c < circuits_n; ++c) circuits.push_back(c);

  emulator::Chip chip(chip_id);
  CalibrationOptions options;
  options.circuits = circuits;
  const auto start = std::chrono::steady_clock::now();
  const std::clock_t cpu_start = std::clock();
  absl::StatusOr<hxemu::v1::Calibration> cal =
      Calibrate(chip, hxemu::v1::CalibrationTargets(), options);
  const double wall_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  const double cpu_s =
      static_cast<double>(std::clock() - cpu_start) / CLOCKS_PER_SEC;
  if (!cal.ok()) {
    std::fprintf(stderr, "calibration failed: %s\n",
                 std::string(cal.status().message()).c_str());
    return 1;
  }
  std::printf("calibration_bench: chip %u, %d circuits, default targets\n",
              chip_id, circuits_n);
  std::printf(
      "wall time of the calibration: %.2f s, CPU time %.2f s (one thread; "
      "wall > CPU means the machine was busy)\n",
      wall_s, cpu_s);
  std::printf("failed circuits: %u  %s\n", cal->num_failed(),
              cal->warning().c_str());
  for (const auto& cc : cal->circuits()) {
    if (!cc.success()) {
      std::printf("  circuit %u missed:", cc.circuit());
      for (const auto& f : cc.failed_targets()) std::printf(" %s", f.c_str());
      std::printf("\n");
    }
  }

  // Uncalibrated: the median calibrated code of every parameter for all.
  const std::vector<ParameterValues> after_cfg =
      ConfigsFromCalibration(*cal, circuits);
  std::vector<ParameterValues> before_cfg = after_cfg;
  for (emulator::NeuronParameter p : CalibratedParameters()) {
    std::vector<int32_t> v;
    for (const ParameterValues& c : after_cfg) v.push_back(At(c, p));
    std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
    for (ParameterValues& c : before_cfg) At(c, p) = v[v.size() / 2];
  }
  const hxemu::v1::CalibrationTargets& targets = cal->targets();
  const auto before =
      MeasureCircuits(chip, circuits, before_cfg, targets, {.seed = 777});
  const auto after =
      MeasureCircuits(chip, circuits, after_cfg, targets, {.seed = 778});
  emulator::Chip other(chip_id + 1);
  const auto wrong =
      MeasureCircuits(other, circuits, after_cfg, targets, {.seed = 779});
  if (!before.ok() || !after.ok() || !wrong.ok()) {
    std::fprintf(stderr, "measurement failed\n");
    return 1;
  }
  const Column columns[] = {
      {"leak", "CADC LSB", &CircuitMeasurement::leak, targets.leak()},
      {"reset", "CADC LSB", &CircuitMeasurement::reset, targets.reset()},
      {"threshold", "CADC LSB", &CircuitMeasurement::threshold,
       targets.threshold()},
      {"tau_mem", "us", &CircuitMeasurement::tau_mem_us, targets.tau_mem_us()},
      {"tau_syn_exc", "us", &CircuitMeasurement::tau_syn_exc_us,
       targets.tau_syn_exc_us()},
      {"tau_syn_inh", "us", &CircuitMeasurement::tau_syn_inh_us,
       targets.tau_syn_inh_us()},
      {"synin_exc", "CADC LSB step", &CircuitMeasurement::synin_exc, 0},
      {"synin_inh", "CADC LSB step", &CircuitMeasurement::synin_inh, 0},
      {"refractory", "us", &CircuitMeasurement::refractory_time_us,
       targets.refractory_time_us()},
  };
  for (const Column& col : columns) {
    const bool relative = std::string(col.unit) != "CADC LSB";
    std::printf("%s [%s], target %g:\n", col.name, col.unit, col.target);
    PrintSpread("before", ComputeSpread(Values(*before, col.get)), relative);
    PrintSpread("after", ComputeSpread(Values(*after, col.get)), relative);
    PrintSpread("wrong chip", ComputeSpread(Values(*wrong, col.get)), relative);
  }
  return 0;
}

}  // namespace
}  // namespace hxemu::calibration

int main(int argc, char** argv) { return hxemu::calibration::Main(argc, argv); }

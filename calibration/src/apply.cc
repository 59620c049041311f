// File: apply.cc
#include "hxemu/calibration/apply.h"

#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "hxemu/emulator/chip.h"
#include "hxemu/emulator/chip_constants.h"
#include "hxemu/emulator/parameters.h"
#include "status_macros.h"

namespace hxemu::calibration {
namespace {

using ::hxemu::emulator::kNumNeuronCircuits;
using ::hxemu::emulator::kNumNeuronParameters;
using ::hxemu::emulator::NeuronParameterTable;

constexpr int32_t kUnset = INT32_MIN;

}  // namespace

absl::Status ValidateCalibration(const hxemu::v1::Calibration& cal,
                                 absl::string_view path) {
  if (cal.targets().has_synapse_dac_bias()) {
    const int32_t bias = cal.targets().synapse_dac_bias();
    if (bias < 30 || bias > 1022) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ".targets.synapse_dac_bias: ", bias,
                       " is out of range 30..1022 [CapMem LSB]"));
    }
  }
  std::set<uint32_t> seen;
  for (int i = 0; i < cal.circuits_size(); ++i) {
    const hxemu::v1::CircuitCalibration& cc = cal.circuits(i);
    const std::string at = absl::StrCat(path, ".circuits[", i, "]");
    if (cc.circuit() >= kNumNeuronCircuits) {
      return absl::InvalidArgumentError(
          absl::StrCat(at, ".circuit: ", cc.circuit(), " is out of range 0..",
                       kNumNeuronCircuits - 1));
    }
    if (!seen.insert(cc.circuit()).second) {
      return absl::InvalidArgumentError(absl::StrCat(
          at, ".circuit: circuit ", cc.circuit(), " appears twice"));
    }
    for (int k = 0; k < cc.parameters_size(); ++k) {
      const hxemu::v1::NeuronParameter& np = cc.parameters(k);
      const std::string pat = absl::StrCat(at, ".parameters[", k, "]");
      const auto id = emulator::FindNeuronParameter(np.name());
      if (!id) {
        return absl::InvalidArgumentError(
            absl::StrCat(pat, ".name: unknown parameter \"", np.name(), "\""));
      }
      if (np.values_size() != 1) {
        return absl::InvalidArgumentError(
            absl::StrCat(pat, "[", np.name(), "].values: must have exactly ",
                         "1 value (got ", np.values_size(), ")"));
      }
      const emulator::NeuronParameterInfo& info = emulator::Info(*id);
      if (np.values(0) < info.min || np.values(0) > info.max) {
        return absl::InvalidArgumentError(
            absl::StrCat(pat, "[", np.name(), "].values[0]: ", np.values(0),
                         " is out of range ", info.min, "..", info.max));
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<hxemu::v1::Experiment> ApplyInitialConfig(
    const hxemu::v1::Experiment& experiment) {
  if (!experiment.has_initial_config()) return experiment;
  const hxemu::v1::Calibration& cal = experiment.initial_config();
  CAL_RETURN_IF_ERROR(ValidateCalibration(cal, "initial_config"));
  CAL_ASSIGN_OR_RETURN(const std::vector<std::vector<uint32_t>> placement,
                       emulator::PlaceNeurons(experiment));
  // Calibrated value of every parameter per circuit (kUnset: none).
  std::vector<std::vector<int32_t>> calibrated(kNumNeuronCircuits,
                                               std::vector<int32_t>());
  std::vector<bool> any(kNumNeuronParameters, false);
  for (const hxemu::v1::CircuitCalibration& cc : cal.circuits()) {
    std::vector<int32_t>& row = calibrated[cc.circuit()];
    row.assign(kNumNeuronParameters, kUnset);
    for (const hxemu::v1::NeuronParameter& np : cc.parameters()) {
      const int id =
          static_cast<int>(*emulator::FindNeuronParameter(np.name()));
      row[id] = np.values(0);
      any[id] = true;
    }
  }

  hxemu::v1::Experiment out = experiment;
  out.clear_initial_config();
  if (!out.has_chip_id()) out.set_chip_id(cal.chip_id());
  // The calibrated i_synin_gm hold under the bias they were matched at: the
  // chip-global synapse DAC bias comes with the calibration unless the
  // experiment sets its own.
  if (!out.has_synapse_dac_bias() && cal.targets().has_synapse_dac_bias()) {
    out.set_synapse_dac_bias(
        static_cast<uint32_t>(cal.targets().synapse_dac_bias()));
  }
  for (int p = 0;
       p < out.populations_size() && p < static_cast<int>(placement.size());
       ++p) {
    const std::vector<uint32_t>& circuits = placement[p];
    if (circuits.empty()) continue;  // not an HX population
    hxemu::v1::Population* pop = out.mutable_populations(p);
    std::vector<bool> explicit_set(kNumNeuronParameters, false);
    for (const hxemu::v1::NeuronParameter& np : pop->parameters()) {
      if (auto id = emulator::FindNeuronParameter(np.name())) {
        explicit_set[static_cast<int>(*id)] = true;
      }
    }
    for (int id = 0; id < kNumNeuronParameters; ++id) {
      if (!any[id] || explicit_set[id]) continue;
      const int32_t table_default = NeuronParameterTable()[id].default_value;
      std::vector<int32_t> values(circuits.size());
      bool differs = false;
      for (size_t n = 0; n < circuits.size(); ++n) {
        const std::vector<int32_t>& row = calibrated[circuits[n]];
        values[n] = row.empty() || row[id] == kUnset ? table_default : row[id];
        differs = differs || values[n] != table_default;
      }
      if (!differs) continue;
      hxemu::v1::NeuronParameter* np = pop->add_parameters();
      np->set_name(std::string(NeuronParameterTable()[id].name));
      bool uniform = true;
      for (int32_t v : values) uniform = uniform && v == values[0];
      if (uniform) {
        np->add_values(values[0]);
      } else {
        for (int32_t v : values) np->add_values(v);
      }
    }
  }
  return out;
}

}  // namespace hxemu::calibration

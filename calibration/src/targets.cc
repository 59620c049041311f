// File: targets.cc
//
// calix defaults and ranges (ccalix neuron_calib_target.cpp, bss2-spec.md
// §4.2), checked once at the API edge.
#include "hxemu/calibration/targets.h"

#include <cmath>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "status_macros.h"

namespace hxemu::calibration {
namespace {

using ::hxemu::v1::CalibrationTargets;

// One real-valued target: its proto presence and value, default, range.
struct RealTarget {
  absl::string_view field;
  bool has;
  double value;
  double default_value;
  double min;
  double max;
  absl::string_view unit;
  // True: 0 lies outside the range and also means "default".
  bool zero_is_default;
};

absl::Status OutOfRange(absl::string_view field, double value, double min,
                        double max, absl::string_view unit) {
  return absl::InvalidArgumentError(absl::StrCat("targets.", field, ": ", value,
                                                 " is out of range ", min, "..",
                                                 max, " [", unit, "]"));
}

absl::StatusOr<double> Resolve(const RealTarget& t) {
  if (!t.has || (t.zero_is_default && t.value == 0.0)) return t.default_value;
  if (!std::isfinite(t.value) || t.value < t.min || t.value > t.max) {
    return OutOfRange(t.field, t.value, t.min, t.max, t.unit);
  }
  return t.value;
}

absl::StatusOr<int32_t> ResolveInt(absl::string_view field, bool has,
                                   int32_t value, int32_t default_value,
                                   int32_t min, int32_t max,
                                   absl::string_view unit,
                                   bool zero_is_default) {
  if (!has || (zero_is_default && value == 0)) return default_value;
  if (value < min || value > max) {
    return OutOfRange(field, value, min, max, unit);
  }
  return value;
}

}  // namespace

absl::StatusOr<ResolvedTargets> ResolveTargets(const CalibrationTargets& in) {
  ResolvedTargets out;
  const ResolvedTargets def;
  constexpr absl::string_view kCadc = "CADC LSB";
  constexpr absl::string_view kUs = "us hardware";
  CAL_ASSIGN_OR_RETURN(out.leak_cadc,
                       Resolve({"leak", in.has_leak(), in.leak(), def.leak_cadc,
                                50, 160, kCadc, true}));
  CAL_ASSIGN_OR_RETURN(out.reset_cadc,
                       Resolve({"reset", in.has_reset(), in.reset(),
                                def.reset_cadc, 50, 160, kCadc, true}));
  CAL_ASSIGN_OR_RETURN(out.threshold_cadc,
                       Resolve({"threshold", in.has_threshold(), in.threshold(),
                                def.threshold_cadc, 50, 220, kCadc, true}));
  CAL_ASSIGN_OR_RETURN(
      out.tau_mem_us,
      Resolve({"tau_mem_us", in.has_tau_mem_us(), in.tau_mem_us(),
               def.tau_mem_us, 0.5, 60, kUs, true}));
  CAL_ASSIGN_OR_RETURN(
      out.tau_syn_exc_us,
      Resolve({"tau_syn_exc_us", in.has_tau_syn_exc_us(), in.tau_syn_exc_us(),
               def.tau_syn_exc_us, 0.3, 30, kUs, true}));
  CAL_ASSIGN_OR_RETURN(
      out.tau_syn_inh_us,
      Resolve({"tau_syn_inh_us", in.has_tau_syn_inh_us(), in.tau_syn_inh_us(),
               def.tau_syn_inh_us, 0.3, 30, kUs, true}));
  CAL_ASSIGN_OR_RETURN(
      out.i_synin_gm_exc,
      ResolveInt("i_synin_gm_exc", in.has_i_synin_gm_exc(), in.i_synin_gm_exc(),
                 def.i_synin_gm_exc, 30, 800, "CapMem LSB", true));
  CAL_ASSIGN_OR_RETURN(
      out.i_synin_gm_inh,
      ResolveInt("i_synin_gm_inh", in.has_i_synin_gm_inh(), in.i_synin_gm_inh(),
                 def.i_synin_gm_inh, 30, 800, "CapMem LSB", true));
  CAL_ASSIGN_OR_RETURN(
      out.membrane_capacitance,
      ResolveInt("membrane_capacitance", in.has_membrane_capacitance(),
                 in.membrane_capacitance(), def.membrane_capacitance, 0, 63,
                 "capacitance LSB", false));
  CAL_ASSIGN_OR_RETURN(
      out.refractory_time_us,
      Resolve({"refractory_time_us", in.has_refractory_time_us(),
               in.refractory_time_us(), def.refractory_time_us, 0.04, 32, kUs,
               true}));
  CAL_ASSIGN_OR_RETURN(
      out.holdoff_time_us,
      Resolve({"holdoff_time_us", in.has_holdoff_time_us(),
               in.holdoff_time_us(), def.holdoff_time_us, 0, 4, kUs, false}));
  CAL_ASSIGN_OR_RETURN(out.synapse_dac_bias,
                       ResolveInt("synapse_dac_bias", in.has_synapse_dac_bias(),
                                  in.synapse_dac_bias(), def.synapse_dac_bias,
                                  30, 1022, "CapMem LSB", true));
  auto any = [](absl::string_view field, bool has,
                double v) -> absl::StatusOr<std::optional<double>> {
    if (!has) return std::nullopt;
    if (!std::isfinite(v)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "targets.", field, ": ", v, " must be a finite number [CADC LSB]"));
    }
    return v;
  };
  CAL_ASSIGN_OR_RETURN(out.e_coba_reversal_exc,
                       any("e_coba_reversal_exc", in.has_e_coba_reversal_exc(),
                           in.e_coba_reversal_exc()));
  CAL_ASSIGN_OR_RETURN(out.e_coba_reversal_inh,
                       any("e_coba_reversal_inh", in.has_e_coba_reversal_inh(),
                           in.e_coba_reversal_inh()));
  if (in.has_e_coba_reference_exc()) {
    CAL_ASSIGN_OR_RETURN(
        out.e_coba_reference_exc,
        Resolve({"e_coba_reference_exc", true, in.e_coba_reference_exc(), 0, 60,
                 160, kCadc, false}));
  }
  if (in.has_e_coba_reference_inh()) {
    CAL_ASSIGN_OR_RETURN(
        out.e_coba_reference_inh,
        Resolve({"e_coba_reference_inh", true, in.e_coba_reference_inh(), 0, 60,
                 160, kCadc, false}));
  }
  // calix: the COBA reference defaults to the midpoint of leak and
  // threshold.
  const double midpoint = 0.5 * (out.leak_cadc + out.threshold_cadc);
  if (out.e_coba_reversal_exc && !out.e_coba_reference_exc) {
    out.e_coba_reference_exc = midpoint;
  }
  if (out.e_coba_reversal_inh && !out.e_coba_reference_inh) {
    out.e_coba_reference_inh = midpoint;
  }
  // A reference without a reversal potential would silently mean CUBA.
  if (!in.has_e_coba_reversal_exc() && in.has_e_coba_reference_exc()) {
    return absl::InvalidArgumentError(
        "targets.e_coba_reference_exc: needs e_coba_reversal_exc (COBA)");
  }
  if (!in.has_e_coba_reversal_inh() && in.has_e_coba_reference_inh()) {
    return absl::InvalidArgumentError(
        "targets.e_coba_reference_inh: needs e_coba_reversal_inh (COBA)");
  }
  return out;
}

CalibrationTargets ToProto(const ResolvedTargets& t) {
  CalibrationTargets p;
  p.set_leak(t.leak_cadc);
  p.set_reset(t.reset_cadc);
  p.set_threshold(t.threshold_cadc);
  p.set_tau_mem_us(t.tau_mem_us);
  p.set_tau_syn_exc_us(t.tau_syn_exc_us);
  p.set_tau_syn_inh_us(t.tau_syn_inh_us);
  p.set_i_synin_gm_exc(t.i_synin_gm_exc);
  p.set_i_synin_gm_inh(t.i_synin_gm_inh);
  p.set_membrane_capacitance(t.membrane_capacitance);
  p.set_refractory_time_us(t.refractory_time_us);
  p.set_holdoff_time_us(t.holdoff_time_us);
  p.set_synapse_dac_bias(t.synapse_dac_bias);
  if (t.e_coba_reversal_exc) p.set_e_coba_reversal_exc(*t.e_coba_reversal_exc);
  if (t.e_coba_reversal_inh) p.set_e_coba_reversal_inh(*t.e_coba_reversal_inh);
  if (t.e_coba_reference_exc) {
    p.set_e_coba_reference_exc(*t.e_coba_reference_exc);
  }
  if (t.e_coba_reference_inh) {
    p.set_e_coba_reference_inh(*t.e_coba_reference_inh);
  }
  return p;
}

}  // namespace hxemu::calibration

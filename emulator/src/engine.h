// File: engine.h
//
// The time loop: advances the lowered network (network.h) step by step and
// writes spikes and MADC samples into a hxemu.v1.Result. Internal header.
#pragma once

#include "absl/status/status.h"
#include "hxemu/emulator/chip.h"
#include "hxemu/v1/experiment.pb.h"
#include "network.h"

namespace hxemu::emulator {

// Runs `net` (warm-up + recorded run). `result` must already hold one
// SpikeTrain per recorded neuron (in MappedExperiment::spikes order) and one
// Trace per MADC channel; Emulate appends times and codes to them.
// Errors: CANCELLED (control.cancel_requested), RESOURCE_EXHAUSTED (more
// recorded spikes than limits.max_recorded_spikes).
absl::Status Emulate(const Network& net, const ExperimentLimits& limits,
                     const RunControl& control, hxemu::v1::Result& result);

}  // namespace hxemu::emulator

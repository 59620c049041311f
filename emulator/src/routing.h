// File: routing.h
//
// Routing: the network-level projections mapped onto the chip's synapse
// arrays the way the real stack (grenade) does it, with its limits and its
// kinds of error messages. Internal header; docs/emulator-model.md
// section "Routing" describes the model.
//
// Chip model: hemisphere h (circuits 256h .. 256h + 255) has one synapse
// array of 256 rows x 256 columns (column = circuit % 256). Row r is driven
// by synapse driver r / 2; driver d listens on PADI bus d % 4, so every bus
// reaches 64 rows. A row has one receptor mode (excitatory or inhibitory);
// each of its synapses has a 6-bit weight and a 6-bit label, so a row can
// serve up to 64 sources that target disjoint columns. A connection of
// weight |w| takes ceil(|w| / 63) synapses (63, 63, ..., rest) in its
// column, each in a different row. Events of an on-chip neuron reach the
// buses through its neuron event output: bus (circuit % 256) / 64. An
// on-chip Poisson population uses the background source of its bus (its
// index among those populations, 0..3). External sources may use any bus.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "absl/status/statusor.h"
#include "hxemu/emulator/chip_constants.h"
#include "hxemu/v1/experiment.pb.h"

namespace hxemu::emulator {

// One synapse on the chip.
struct PlacedSynapse {
  uint8_t hemisphere;  // = synapse array
  uint8_t row;         // 0..255
  uint8_t column;      // 0..255 (= post circuit % 256)
  uint8_t weight;      // 1..63
};

// Receptor mode of a synapse row.
enum class RowMode : uint8_t { kUnused = 0, kExcitatory = 1, kInhibitory = 2 };

struct Routing {
  // Synapses of connection k of projection j:
  // synapses[synapse_begin[j][k] .. synapse_begin[j][k + 1]).
  std::vector<std::vector<int64_t>> synapse_begin;
  std::vector<PlacedSynapse> synapses;
  std::array<std::array<RowMode, kSynapseRowsPerHemisphere>, kNumNeuronRows>
      row_mode{};
};

// Routes all projections of a validated experiment; `circuits` is the
// placement (circuits[p][n]). Fails with RESOURCE_EXHAUSTED when the network
// does not fit, with the real stack's messages, e.g. "Neuron(s) with
// in-degree larger than the number of synapse rows exist." plus which neuron
// and how many rows it needs.
absl::StatusOr<Routing> RouteProjections(
    const hxemu::v1::Experiment& experiment,
    const std::vector<std::vector<int>>& circuits);

// The routing of the last network routed, for a job that routes the same
// network again (a sweep of neuron parameters, inputs or runtimes over one
// network; the real stack's PyNN backend, too, routes again only when the
// network changed). Keyed by everything routing reads (the populations'
// sizes and cell types, the placement, every projection's populations,
// receptor, indices and weights), compared exactly: a hash could collide
// and give a job another network's synapses. For a full chip the
// comparison reads ~1.5 MB of connection arrays once; routing took ~1.4 ms.
// Thread-safe.
class RoutingCache {
 public:
  // RouteProjections, or the stored routing if its network is this one.
  absl::StatusOr<std::shared_ptr<const Routing>> Route(
      const hxemu::v1::Experiment& experiment,
      const std::vector<std::vector<int>>& circuits);

 private:
  bool SameNetwork(const hxemu::v1::Experiment& experiment,
                   const std::vector<std::vector<int>>& circuits) const;

  std::mutex mu_;  // guards everything below
  std::vector<std::pair<uint32_t, int>> populations_;  // size, cell type
  std::vector<hxemu::v1::Projection> projections_;
  std::vector<std::vector<int>> circuits_;
  std::shared_ptr<const Routing> routing_;  // null: nothing stored
};

}  // namespace hxemu::emulator

// File: hxemu/client/experiment_builder.h
//
// A fluent builder of hxemu.v1.Experiment, the way PyNN describes a network:
//
//   ExperimentBuilder b;
//   PopulationBuilder neuron = b.AddHxNeurons(1, "stimulated")
//                                  .Set("leak_v_leak", 700)
//                                  .Record(kV)
//                                  .Record(kSpikes);
//   PopulationBuilder input = b.AddSpikeSourceArray(2, {0.01, 0.06}, "exc");
//   b.Connect(input, neuron, v1::RECEPTOR_TYPE_EXCITATORY).AllToAll(31);
//   b.RuntimeMs(0.2).Seed(1);
//   absl::StatusOr<v1::Experiment> experiment = b.Build();
//
// Mistakes found while building (a parameter on a spike source, a neuron index
// beyond the population, a weight of the wrong sign, ...) are kept and
// returned by Build() as INVALID_ARGUMENT naming the field, like the server
// does. Parameter names and ranges are checked by the server, or locally by
// Build(server_info) against the table the server publishes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "hxemu/v1/experiment.pb.h"
#include "hxemu/v1/service.pb.h"

namespace hxemu::client {

inline constexpr hxemu::v1::Observable kSpikes = hxemu::v1::OBSERVABLE_SPIKES;
inline constexpr hxemu::v1::Observable kV = hxemu::v1::OBSERVABLE_V;
inline constexpr hxemu::v1::Observable kExcSynin =
    hxemu::v1::OBSERVABLE_EXC_SYNIN;
inline constexpr hxemu::v1::Observable kInhSynin =
    hxemu::v1::OBSERVABLE_INH_SYNIN;
inline constexpr hxemu::v1::Observable kAdaptation =
    hxemu::v1::OBSERVABLE_ADAPTATION;

class ExperimentBuilder;

// One population of the experiment being built: a handle (builder, index),
// cheap to copy, valid while its builder lives. Every setter returns *this.
class PopulationBuilder {
 public:
  // Index into Experiment.populations.
  uint32_t index() const { return index_; }
  uint32_t size() const;

  // HX neurons: parameter `name` (from the server's parameter table, e.g.
  // "leak_v_leak") of all neurons. Setting a name again replaces the value.
  PopulationBuilder& Set(absl::string_view name, int32_t value);
  // One value per neuron (population size values).
  PopulationBuilder& Set(absl::string_view name, std::vector<int32_t> values);
  // HX neurons: the neuron circuit (0..511) of each neuron; default: the next
  // free circuits.
  PopulationBuilder& Circuits(std::vector<uint32_t> circuits);
  // Records `observable` of `neurons` (indices in the population; empty =
  // all). Spikes of any neurons; V/EXC_SYNIN/INH_SYNIN/ADAPTATION go through
  // the MADC (at most two neurons per experiment, see docs/api.md).
  PopulationBuilder& Record(hxemu::v1::Observable observable,
                            std::vector<uint32_t> neurons = {});

 private:
  friend class ExperimentBuilder;
  PopulationBuilder(ExperimentBuilder* builder, uint32_t index)
      : builder_(builder), index_(index) {}
  hxemu::v1::Population* proto() const;

  ExperimentBuilder* builder_;
  uint32_t index_;
};

// One projection: a handle like PopulationBuilder. Connections accumulate.
class ProjectionBuilder {
 public:
  // Index into Experiment.projections.
  uint32_t index() const { return index_; }

  // Every pre neuron to every post neuron, all with `weight` [hardware LSB;
  // >= 0 excitatory, <= 0 inhibitory; |w| > 63 uses several synapses].
  ProjectionBuilder& AllToAll(int32_t weight);
  // Neuron i to neuron i (both populations of equal size).
  ProjectionBuilder& OneToOne(int32_t weight);
  // One connection pre -> post.
  ProjectionBuilder& Connect(uint32_t pre, uint32_t post, int32_t weight);

 private:
  friend class ExperimentBuilder;
  ProjectionBuilder(ExperimentBuilder* builder, uint32_t index)
      : builder_(builder), index_(index) {}
  hxemu::v1::Projection* proto() const;

  ExperimentBuilder* builder_;
  uint32_t index_;
};

class ExperimentBuilder {
 public:
  ExperimentBuilder() = default;
  // Handles point at the builder: it must stay where it is.
  ExperimentBuilder(const ExperimentBuilder&) = delete;
  ExperimentBuilder& operator=(const ExperimentBuilder&) = delete;

  // `size` on-chip AdEx neurons configured by raw hardware parameters
  // (pynn_brainscales HXNeuron); unset parameters keep the table defaults.
  PopulationBuilder AddHxNeurons(uint32_t size, std::string label = "");
  // `size` sources that all fire at `times_ms` [ms hardware].
  PopulationBuilder AddSpikeSourceArray(uint32_t size,
                                        std::vector<double> times_ms,
                                        std::string label = "");
  // One list of spike times [ms hardware] per source.
  PopulationBuilder AddSpikeSourceArray(
      std::vector<std::vector<double>> times_ms_per_source,
      std::string label = "");
  // Poisson sources of `rate_hz` [Hz hardware] each, firing from `start_ms`
  // for `duration_ms` [ms hardware] (0 = until the end), seeded from Seed().
  PopulationBuilder AddSpikeSourcePoisson(uint32_t size, double rate_hz,
                                          double start_ms = 0,
                                          double duration_ms = 0,
                                          std::string label = "");
  // A (so far empty) projection from `pre` to `post` (an HX population).
  ProjectionBuilder Connect(const PopulationBuilder& pre,
                            const PopulationBuilder& post,
                            hxemu::v1::ReceptorType receptor,
                            std::string label = "");

  // Duration of the recorded run [ms hardware], > 0.
  ExperimentBuilder& RuntimeMs(double runtime_ms);
  // Same chip + seed + experiment = bit-identical result.
  ExperimentBuilder& Seed(uint64_t seed);
  // Run on this chip (its mismatch); default: any chip.
  ExperimentBuilder& ChipId(uint32_t chip_id);
  // Start from a chip's calibration (Client::GetCalibration): every placed
  // HX neuron gets its circuit's calibrated parameters instead of the table
  // defaults; parameters set with Set() still win. Without ChipId() the job
  // runs on the calibration's chip.
  ExperimentBuilder& InitialConfig(hxemu::v1::Calibration calibration);
  // Parallel CADC reads of all placed membranes at these times [ms
  // hardware, in [0, runtime_ms)]; RunResult::cadc_reads has one per time.
  ExperimentBuilder& CadcReadsMs(std::vector<double> times_ms);

  // The experiment so far, and direct access for what the builder does not
  // cover; changes through mutable_experiment() are not checked by Build()
  // beyond what the server checks.
  const hxemu::v1::Experiment& experiment() const { return experiment_; }
  hxemu::v1::Experiment* mutable_experiment() { return &experiment_; }

  // The experiment, or the first mistake made while building it.
  absl::StatusOr<hxemu::v1::Experiment> Build() const;
  // Also checks every parameter name and value against the parameter table
  // of `info` (GetServerInfo), with the server's field naming.
  absl::StatusOr<hxemu::v1::Experiment> Build(
      const hxemu::v1::ServerInfo& info) const;

 private:
  friend class PopulationBuilder;
  friend class ProjectionBuilder;
  // Keeps the first error only: later ones are usually consequences.
  void Fail(std::string message);
  PopulationBuilder AddPopulation(uint32_t size, std::string label,
                                  hxemu::v1::CellType cell_type);

  hxemu::v1::Experiment experiment_;
  absl::Status error_;
};

}  // namespace hxemu::client

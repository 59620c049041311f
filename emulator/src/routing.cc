// File: routing.cc
//
// Greedy routing, per hemisphere:
//   1. group the connections by (source neuron, receptor); a group needs as
//      many rows as its most-used column has synapses (weights > 63 split);
//   2. check every neuron's in-degree: <= 256 rows in all, <= 64 rows from
//      the sources of one fixed PADI bus;
//   3. pack the groups into the rows of their bus, first fit, fixed-bus
//      sources first, then external sources by decreasing size onto the bus
//      that needs the fewest new rows (rows are shared by sources with
//      disjoint columns, up to 64 labels per row);
//   4. hand out the synapses of every connection from its group's rows.
#include "routing.h"

#include <algorithm>
#include <bitset>
#include <cstdlib>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace hxemu::emulator {
namespace {

using ::hxemu::v1::Experiment;
using Columns = std::bitset<kNumNeuronColumns>;

constexpr int kFreeBus = -1;

// Synapses that a connection of weight w takes.
int64_t SynapsesOf(int32_t w) {
  const int64_t a = std::abs(static_cast<int64_t>(w));
  return (a + kMaxSynapseWeight - 1) / kMaxSynapseWeight;
}

// One connection, with where it goes.
// Made in projection order, one per connection (projection j, index k):
// the entry index is the connection's position in that order. (12 bytes: a
// full chip has 131072 of them, scanned several times. Nodes are int32
// throughout the emulator, see Connectivity.)
struct Entry {
  int32_t source;    // node
  int32_t synapses;  // SynapsesOf(weight)
  int16_t column;
  int8_t hemisphere;
  int8_t receptor;  // 0 excitatory, 1 inhibitory
};

struct Row {
  int receptor;
  Columns columns;
  int labels;
};

// Rows of one bus of one hemisphere; rows[n] is the bus's n-th row.
// Rows before first_open are closed (every column taken or every label
// used): nothing fits them any more, so the searches for a fitting row
// start at first_open (a full chip's sources each fill a row: without it
// the searches were quadratic in the rows).
struct Bus {
  std::vector<Row> rows;
  size_t first_open = 0;
};

bool Closed(const Row& row) {
  return row.labels >= kLabelsPerSynapseRow || row.columns.all();
}

// Row of the synapse array of the n-th row of bus b.
int ArrayRow(int bus, int n) {
  const int driver = kNumPadiBusesPerHemisphere * (n / 2) + bus;
  return 2 * driver + n % 2;
}

// The entries sorted by (hemisphere, source, receptor, column, projection,
// index): sorted[k] = entries[order[k]]. A stable sort by the first four
// gives it. Usually the entries are in that order already group by group:
// the connectors make a source's connections together and in target order,
// so that every (hemisphere, source, receptor) group is one run of the
// entries, in column order. Then nothing is moved: `sorted` and `order` stay
// empty (the entries are their own sorted order, group by group) and only
// the groups' ranges are put in key order. Otherwise a stable counting sort
// by (hemisphere, source, receptor) places the entries themselves (the
// passes after it read them in order, not through `order`), then a stable
// sort by column of every group that is not in column order. Linear time
// (std::sort of the entries took ~4 ms for the 131072 connections of a full
// chip, moving them ~1 ms). Where sources are many more than connections,
// std::stable_sort of the index instead (the counts would be mostly empty).
// groups: per (hemisphere, source, receptor) group, in key order, its
// [begin, end) positions in Entries(): `sorted`, or `entries` if that is
// empty.
struct SortedEntries {
  std::vector<uint32_t> order;
  std::vector<Entry> sorted;
  std::vector<std::pair<size_t, size_t>> groups;
  // The sorted entries (of each group) and the index in `entries` of the
  // one at sorted position k.
  const std::vector<Entry>& Entries(const std::vector<Entry>& entries) const {
    return order.empty() ? entries : sorted;
  }
  size_t EntryIndex(size_t k) const { return order.empty() ? k : order[k]; }
};
SortedEntries SortEntries(const std::vector<Entry>& entries,
                          int64_t num_nodes) {
  const size_t n = entries.size();
  const auto group_key = [num_nodes](const Entry& en) {
    return (static_cast<int64_t>(en.hemisphere) * num_nodes + en.source) * 2 +
           en.receptor;
  };
  SortedEntries out;
  if (n == 0) return out;
  std::vector<uint32_t>& order = out.order;
  std::vector<Entry>& sorted = out.sorted;
  std::vector<std::pair<size_t, size_t>>& groups = out.groups;
  const int64_t num_keys = kNumNeuronRows * num_nodes * 2;
  if (num_keys > 4 * static_cast<int64_t>(n) + 4096) {
    order.resize(n);
    sorted.resize(n);
    for (size_t a = 0; a < n; ++a) order[a] = static_cast<uint32_t>(a);
    std::stable_sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) {
      const int64_t ka = group_key(entries[a]);
      const int64_t kb = group_key(entries[b]);
      return ka != kb ? ka < kb : entries[a].column < entries[b].column;
    });
    size_t first = 0;
    for (size_t k = 0; k < n; ++k) {
      sorted[k] = entries[order[k]];
      if (k > 0 && group_key(sorted[k]) != group_key(sorted[k - 1])) {
        groups.push_back({first, k});
        first = k;
      }
    }
    groups.push_back({first, n});
    return out;
  }
  // The runs of equal keys, in one read (a source's connections come
  // together), and whether each key has one run in column order.
  struct Run {
    int64_t key;
    size_t begin, end;
  };
  std::vector<Run> runs;
  std::vector<uint8_t> key_seen(static_cast<size_t>(num_keys), 0);
  bool grouped = true;
  for (size_t a = 0; a < n;) {
    const int64_t key = group_key(entries[a]);
    size_t b = a + 1;
    int in_order = 1;  // (bitwise: one branch-free read)
    for (; b < n && group_key(entries[b]) == key; ++b) {
      in_order &= static_cast<int>(entries[b - 1].column <= entries[b].column);
    }
    grouped = grouped && in_order != 0 && key_seen[key] == 0;
    key_seen[key] = 1;
    runs.push_back({key, a, b});
    a = b;
  }
  if (grouped) {
    // (Keys are distinct: a plain sort of the runs is the stable one.)
    std::sort(runs.begin(), runs.end(),
              [](const Run& x, const Run& y) { return x.key < y.key; });
    groups.reserve(runs.size());
    for (const Run& r : runs) groups.push_back({r.begin, r.end});
    return out;
  }
  order.resize(n);
  sorted.resize(n);
  // begin[key]: the first position of key (then, while placing, the next).
  // Counted and placed by runs: incrementing the same counter entry after
  // entry waits for the store before, ~5 cycles each.
  std::vector<uint32_t> begin(static_cast<size_t>(num_keys) + 1, 0);
  for (const Run& r : runs) {
    begin[r.key + 1] += static_cast<uint32_t>(r.end - r.begin);
  }
  for (int64_t k = 0; k < num_keys; ++k) begin[k + 1] += begin[k];
  std::vector<uint32_t> next(begin.begin(), begin.end() - 1);
  for (const Run& r : runs) {
    uint32_t& k = next[r.key];
    for (size_t c = r.begin; c < r.end; ++c, ++k) {
      order[k] = static_cast<uint32_t>(c);
      sorted[k] = entries[c];
    }
  }
  // The groups out of column order: their (entry, index) pairs sorted.
  std::vector<std::pair<Entry, uint32_t>> group;
  const auto by_column = [](const std::pair<Entry, uint32_t>& x,
                            const std::pair<Entry, uint32_t>& y) {
    return x.first.column < y.first.column;
  };
  for (int64_t k = 0; k < num_keys; ++k) {
    const size_t first = begin[k];
    const size_t last = begin[k + 1];
    if (first == last) continue;
    groups.push_back({first, last});
    bool in_order = true;
    for (size_t q = first + 1; q < last && in_order; ++q) {
      in_order = sorted[q - 1].column <= sorted[q].column;
    }
    if (in_order) continue;
    group.clear();
    for (size_t q = first; q < last; ++q)
      group.push_back({sorted[q], order[q]});
    std::stable_sort(group.begin(), group.end(), by_column);
    for (size_t q = first; q < last; ++q) {
      sorted[q] = group[q - first].first;
      order[q] = group[q - first].second;
    }
  }
  return out;
}

class Router {
 public:
  Router(const Experiment& e, const std::vector<std::vector<int>>& circuits)
      : e_(e), circuits_(circuits) {
    node_begin_.resize(e.populations_size() + 1, 0);
    for (int p = 0; p < e.populations_size(); ++p) {
      node_begin_[p + 1] = node_begin_[p] + e.populations(p).size();
    }
    // Per node, once (every connection asks for its source's bus): an
    // on-chip neuron's bus is its column's; an on-chip Poisson population
    // uses the background source of its index among those populations.
    fixed_bus_of_node_.resize(static_cast<size_t>(node_begin_.back()));
    int on_chip_poisson = 0;
    for (int p = 0; p < e.populations_size(); ++p) {
      const hxemu::v1::Population& pop = e.populations(p);
      int population_bus = kFreeBus;
      if (pop.cell_type() ==
          hxemu::v1::CELL_TYPE_SPIKE_SOURCE_POISSON_ON_CHIP) {
        population_bus = on_chip_poisson++ % kNumPadiBusesPerHemisphere;
      }
      const bool on_chip_neuron =
          pop.cell_type() == hxemu::v1::CELL_TYPE_HX_NEURON;
      for (int64_t n = 0; n < pop.size(); ++n) {
        fixed_bus_of_node_[node_begin_[p] + n] = static_cast<int8_t>(
            on_chip_neuron
                ? (circuits_[p][n] % kNumNeuronColumns) /
                      (kNumNeuronColumns / kNumPadiBusesPerHemisphere)
                : population_bus);
      }
    }
  }

  absl::StatusOr<Routing> Run() {
    Routing out;
    out.synapse_begin.resize(e_.projections_size());
    size_t num_connections = 0;
    for (const hxemu::v1::Projection& proj : e_.projections()) {
      num_connections += static_cast<size_t>(proj.pre_indices_size());
    }
    std::vector<Entry> entries(num_connections);
    int64_t num_synapses = 0;
    size_t a = 0;  // entry of (j, k)
    for (const hxemu::v1::Projection& proj : e_.projections()) {
      const int8_t receptor =
          proj.receptor_type() == hxemu::v1::RECEPTOR_TYPE_INHIBITORY ? 1 : 0;
      const std::vector<int>& post_circuits = circuits_[proj.post_population()];
      const int64_t pre_begin = node_begin_[proj.pre_population()];
      for (int k = 0; k < proj.pre_indices_size(); ++k, ++a) {
        const int c = post_circuits[proj.post_indices(k)];
        Entry& en = entries[a];
        en.source = static_cast<int32_t>(pre_begin + proj.pre_indices(k));
        en.synapses = static_cast<int32_t>(SynapsesOf(proj.weights(k)));
        en.column = static_cast<int16_t>(c % kNumNeuronColumns);
        en.hemisphere = static_cast<int8_t>(c / kNumNeuronColumns);
        en.receptor = receptor;
        num_synapses += en.synapses;
      }
    }
    if (absl::Status s = CheckInDegree(entries); !s.ok()) return s;
    const SortedEntries se = SortEntries(entries, node_begin_.back());
    const std::vector<Entry>& sorted = se.Entries(entries);

    // Groups: runs of equal (hemisphere, source, receptor), as ranges of
    // sorted positions.
    struct Group {
      size_t begin, end;  // sorted positions
      int64_t rows;       // rows needed
      int64_t columns;    // columns touched
      int bus;            // fixed bus or kFreeBus
    };
    std::vector<Group> groups;
    groups.reserve(se.groups.size());
    for (const auto& [group_begin, group_end] : se.groups) {
      int64_t rows = 0, columns = 0;
      for (size_t b = group_begin; b < group_end;) {
        const int16_t column = sorted[b].column;
        int64_t in_column = 0;
        for (; b < group_end && sorted[b].column == column; ++b) {
          in_column += sorted[b].synapses;
        }
        rows = std::max(rows, in_column);
        columns += in_column > 0;
      }
      if (rows > 0) {
        groups.push_back({group_begin, group_end, rows, columns,
                          FixedBus(sorted[group_begin].source)});
      }
    }
    // Fixed-bus sources first, then the largest free ones.
    std::stable_sort(groups.begin(), groups.end(),
                     [](const Group& x, const Group& y) {
                       const bool fx = x.bus != kFreeBus;
                       const bool fy = y.bus != kFreeBus;
                       if (fx != fy) return fx;
                       if (x.rows != y.rows) return x.rows > y.rows;
                       return x.columns > y.columns;
                     });

    std::array<std::array<Bus, kNumPadiBusesPerHemisphere>, kNumNeuronRows>
        buses;
    // The array rows of all groups, group after group (group g's piece t at
    // group_rows[row_begin[g] + t]), and per entry (index in `entries`) where
    // its first synapse's row is in it.
    std::vector<int> group_rows;
    std::vector<int64_t> entry_first_row(entries.size(), 0);
    std::vector<Columns> pieces;
    std::vector<int> bus_rows;
    for (const Group& grp : groups) {
      const int h = sorted[grp.begin].hemisphere;
      const int receptor = sorted[grp.begin].receptor;
      const int64_t row_begin = static_cast<int64_t>(group_rows.size());
      // Piece t covers the columns with more than t synapses.
      pieces.assign(grp.rows, Columns());
      for (size_t b = grp.begin; b < grp.end;) {
        const int16_t column = sorted[b].column;
        int64_t in_column = 0;
        for (; b < grp.end && sorted[b].column == column; ++b) {
          entry_first_row[se.EntryIndex(b)] = row_begin + in_column;
          in_column += sorted[b].synapses;
        }
        for (int64_t t = 0; t < in_column; ++t) pieces[t].set(column);
      }
      int best_bus = grp.bus;
      if (best_bus == kFreeBus) {
        int64_t best_new = kSynapseRowsPerPadiBus + 1;
        for (int b = 0; b < kNumPadiBusesPerHemisphere; ++b) {
          const int64_t added = NewRows(buses[h][b], receptor, pieces);
          const int64_t free_rows =
              kSynapseRowsPerPadiBus -
              static_cast<int64_t>(buses[h][b].rows.size());
          if (added <= free_rows &&
              (added < best_new ||
               (added == best_new &&
                buses[h][b].rows.size() < buses[h][best_bus].rows.size()))) {
            best_new = added;
            best_bus = b;
          }
        }
      }
      bus_rows.clear();
      if (best_bus == kFreeBus ||
          !Place(buses[h][best_bus], receptor, pieces, bus_rows)) {
        return SourceDistributionFailed(sorted[grp.begin], best_bus);
      }
      for (const int n : bus_rows) {
        const int row = ArrayRow(best_bus, n);
        group_rows.push_back(row);
        out.row_mode[h][row] =
            receptor == 0 ? RowMode::kExcitatory : RowMode::kInhibitory;
      }
    }

    // Synapses per connection, in projection order (the order of
    // `entries`).
    out.synapses.resize(static_cast<size_t>(num_synapses));
    int64_t q = 0;  // next synapse
    a = 0;
    for (int j = 0; j < e_.projections_size(); ++j) {
      const hxemu::v1::Projection& proj = e_.projections(j);
      std::vector<int64_t>& begin = out.synapse_begin[j];
      begin.resize(proj.pre_indices_size() + 1);
      for (int k = 0; k < proj.pre_indices_size(); ++k, ++a) {
        begin[k] = q;
        const Entry& en = entries[a];
        int64_t left = std::abs(static_cast<int64_t>(proj.weights(k)));
        const int* rows = group_rows.data() + entry_first_row[a];
        for (int64_t t = 0; t < en.synapses; ++t, ++q) {
          const int64_t w = std::min<int64_t>(left, kMaxSynapseWeight);
          left -= w;
          out.synapses[q] = {static_cast<uint8_t>(en.hemisphere),
                             static_cast<uint8_t>(rows[t]),
                             static_cast<uint8_t>(en.column),
                             static_cast<uint8_t>(w)};
        }
      }
      begin[proj.pre_indices_size()] = q;
    }
    return out;
  }

 private:
  // Population and neuron of a node.
  std::pair<int, int64_t> PopulationOf(int64_t node) const {
    const int p = static_cast<int>(
        std::upper_bound(node_begin_.begin(), node_begin_.end(), node) -
        node_begin_.begin() - 1);
    return {p, node - node_begin_[p]};
  }

  // PADI bus that a source's events must use, or kFreeBus.
  int FixedBus(int64_t node) const { return fixed_bus_of_node_[node]; }

  std::string NeuronAt(int hemisphere, int column) const {
    const int c = hemisphere * kNumNeuronColumns + column;
    for (size_t p = 0; p < circuits_.size(); ++p) {
      for (size_t n = 0; n < circuits_[p].size(); ++n) {
        if (circuits_[p][n] == c) {
          return absl::StrCat("populations[", p, "] neuron ", n, " (circuit ",
                              c, ")");
        }
      }
    }
    return absl::StrCat("circuit ", c);
  }

  std::string SourceName(int64_t node) const {
    const auto [p, n] = PopulationOf(node);
    return absl::StrCat("populations[", p, "] neuron ", n);
  }

  absl::Status CheckInDegree(const std::vector<Entry>& entries) const {
    // rows[h][column], and per fixed bus.
    std::array<std::array<int64_t, kNumNeuronColumns>, kNumNeuronRows> total{};
    std::array<std::array<std::array<int64_t, kNumNeuronColumns>,
                          kNumPadiBusesPerHemisphere>,
               kNumNeuronRows>
        fixed{};
    for (const Entry& en : entries) {
      total[en.hemisphere][en.column] += en.synapses;
      const int bus = FixedBus(en.source);
      if (bus != kFreeBus) fixed[en.hemisphere][bus][en.column] += en.synapses;
    }
    for (int h = 0; h < kNumNeuronRows; ++h) {
      for (int col = 0; col < kNumNeuronColumns; ++col) {
        if (total[h][col] > kSynapseRowsPerHemisphere) {
          return absl::ResourceExhaustedError(absl::StrCat(
              "projections: Neuron(s) with in-degree larger than the number ",
              "of synapse rows exist: ", NeuronAt(h, col), " needs ",
              total[h][col], " synapse rows, a hemisphere has ",
              kSynapseRowsPerHemisphere,
              " (a connection of weight |w| takes ceil(|w| / ",
              kMaxSynapseWeight, ") rows)"));
        }
        for (int b = 0; b < kNumPadiBusesPerHemisphere; ++b) {
          if (fixed[h][b][col] > kSynapseRowsPerPadiBus) {
            return absl::ResourceExhaustedError(absl::StrCat(
                "projections: Neuron(s) with in-degree on a single PADI-bus ",
                "larger than its number of synapse rows exist: ",
                NeuronAt(h, col), " needs ", fixed[h][b][col],
                " synapse rows from sources on PADI bus ", b,
                " (on-chip neurons in columns ", 64 * b, "..", 64 * b + 63,
                " and on-chip Poisson population ", b, "), a PADI bus has ",
                kSynapseRowsPerPadiBus));
          }
        }
      }
    }
    return absl::OkStatus();
  }

  static bool Fits(const Row& row, int receptor, const Columns& cols) {
    return row.receptor == receptor && row.labels < kLabelsPerSynapseRow &&
           (row.columns & cols).none();
  }

  // New rows that placing `pieces` on `bus` would open.
  static int64_t NewRows(const Bus& bus, int receptor,
                         const std::vector<Columns>& pieces) {
    std::bitset<kSynapseRowsPerPadiBus> taken;  // (a bus has at most that many)
    int64_t added = 0;
    for (const Columns& cols : pieces) {
      bool placed = false;
      for (size_t n = bus.first_open; n < bus.rows.size() && !placed; ++n) {
        if (!taken[n] && Fits(bus.rows[n], receptor, cols)) {
          taken[n] = true;
          placed = true;
        }
      }
      added += !placed;
    }
    return added;
  }

  // Places `pieces` on `bus` (first fit, else a new row); the bus-local row
  // of every piece goes to `rows`. False if the bus is full.
  static bool Place(Bus& bus, int receptor, const std::vector<Columns>& pieces,
                    std::vector<int>& rows) {
    for (const Columns& cols : pieces) {
      int found = -1;
      for (size_t n = bus.first_open; n < bus.rows.size(); ++n) {
        if (Fits(bus.rows[n], receptor, cols)) {
          found = static_cast<int>(n);
          break;
        }
      }
      if (found < 0) {
        if (static_cast<int>(bus.rows.size()) >= kSynapseRowsPerPadiBus) {
          return false;
        }
        bus.rows.push_back({receptor, Columns(), 0});
        found = static_cast<int>(bus.rows.size()) - 1;
      }
      bus.rows[found].columns |= cols;
      ++bus.rows[found].labels;
      rows.push_back(found);
      while (bus.first_open < bus.rows.size() &&
             Closed(bus.rows[bus.first_open])) {
        ++bus.first_open;
      }
    }
    return true;
  }

  absl::Status SourceDistributionFailed(const Entry& en, int bus) const {
    return absl::ResourceExhaustedError(absl::StrCat(
        "projections: Source distribution not successful. This can happen ",
        "either if internal and background sources require more than the ",
        "available synapse drivers on a single PADI-bus or if no ",
        "distribution of external sources over the PADI-busses is found: ",
        SourceName(en.source), " finds no free synapse rows in hemisphere ",
        en.hemisphere,
        bus == kFreeBus ? std::string(" on any PADI bus")
                        : absl::StrCat(" on its PADI bus ", bus),
        " (", kSynapseRowsPerPadiBus, " rows per bus, ", kLabelsPerSynapseRow,
        " sources per row)"));
  }

  const Experiment& e_;
  const std::vector<std::vector<int>>& circuits_;
  std::vector<int64_t> node_begin_;
  std::vector<int8_t> fixed_bus_of_node_;  // FixedBus, per node
};

}  // namespace

absl::StatusOr<Routing> RouteProjections(
    const Experiment& experiment,
    const std::vector<std::vector<int>>& circuits) {
  return Router(experiment, circuits).Run();
}

bool RoutingCache::SameNetwork(
    const Experiment& e, const std::vector<std::vector<int>>& circuits) const {
  if (routing_ == nullptr ||
      static_cast<size_t>(e.populations_size()) != populations_.size() ||
      static_cast<size_t>(e.projections_size()) != projections_.size() ||
      circuits != circuits_) {
    return false;
  }
  for (int p = 0; p < e.populations_size(); ++p) {
    if (populations_[p] !=
        std::pair<uint32_t, int>(e.populations(p).size(),
                                 e.populations(p).cell_type())) {
      return false;
    }
  }
  const auto same = [](const auto& a, const auto& b) {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin());
  };
  for (int j = 0; j < e.projections_size(); ++j) {
    const hxemu::v1::Projection& x = e.projections(j);
    const hxemu::v1::Projection& y = projections_[j];
    if (x.pre_population() != y.pre_population() ||
        x.post_population() != y.post_population() ||
        x.receptor_type() != y.receptor_type() ||
        !same(x.pre_indices(), y.pre_indices()) ||
        !same(x.post_indices(), y.post_indices()) ||
        !same(x.weights(), y.weights())) {
      return false;
    }
  }
  return true;
}

absl::StatusOr<std::shared_ptr<const Routing>> RoutingCache::Route(
    const Experiment& e, const std::vector<std::vector<int>>& circuits) {
  const std::lock_guard<std::mutex> lock(mu_);
  if (SameNetwork(e, circuits)) return routing_;
  absl::StatusOr<Routing> routing = RouteProjections(e, circuits);
  if (!routing.ok()) return routing.status();
  routing_ = std::make_shared<const Routing>(*std::move(routing));
  populations_.clear();
  for (const hxemu::v1::Population& pop : e.populations()) {
    populations_.push_back({pop.size(), pop.cell_type()});
  }
  projections_.assign(e.projections().begin(), e.projections().end());
  circuits_ = circuits;
  return routing_;
}

}  // namespace hxemu::emulator

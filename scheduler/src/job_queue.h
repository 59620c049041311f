// File: job_queue.h (internal to hxemu_scheduler)
//
// The jobs waiting for a chip, in the order they are handed out.
//
// First cut: one global FIFO over all users. A job pinned to a chip
// (experiment.chip_id) is handed only to that chip; the others go to whichever
// chip asks first. The scheduler asks the queue "what may chip K run next?"
// (PopFor), so a later per-user round-robin or weighted policy replaces this
// class without touching the workers.
//
// Not thread-safe: the scheduler calls it with its mutex held.
#pragma once

#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "job.h"

namespace hxemu::scheduler::internal {

class JobQueue {
 public:
  // Appends `job` (not null, not already queued).
  void Push(std::shared_ptr<Job> job);

  // Removes and returns the oldest job that chip `chip_id` may run: one
  // pinned to that chip or to none. Null if there is none.
  std::shared_ptr<Job> PopFor(uint32_t chip_id);

  // Removes `job`; returns false if it is not in the queue.
  bool Remove(const Job& job);

  // Number of jobs ahead of `job`, which must be queued. O(queue size).
  size_t Position(const Job& job) const;

  // Removes and returns every job, oldest first.
  std::vector<std::shared_ptr<Job>> TakeAll();

  size_t size() const { return order_.size(); }
  bool empty() const { return order_.empty(); }

 private:
  using List = std::list<std::shared_ptr<Job>>;

  // Invariant: `index_` maps exactly the jobs in `order_` to their position.
  List order_;  // oldest first
  absl::flat_hash_map<const Job*, List::iterator> index_;
};

}  // namespace hxemu::scheduler::internal

// File: job_queue.h (internal to hxemu_scheduler)
//
// The jobs waiting for a chip, and the order they are handed out in:
// per-user FIFO queues served round-robin.
//
// - Each user with queued jobs has a FIFO and a place in a ring. The user at
//   the front of the ring has the turn. A user with weight w (default 1) gets
//   up to w jobs per turn; then it moves to the back of the ring, so with
//   weight 1 the user switches after every job whenever others wait. A user
//   whose queue empties leaves the ring; one who queues again joins at the
//   back. So a newcomer waits for at most one turn of every user ahead of it
//   (per chip), however many jobs those users have queued.
// - Time slice (optional, > 0): a turn lasts until the user got its `weight`
//   jobs AND the slice passed since the turn's first job started; jobs
//   handed out within the slice keep the user's turn (fewer chip switches).
// - Usage tie-break: users that joined the ring and wait for their first
//   turn (at its back) are ordered by usage (lower first; the scheduler
//   passes decayed run time over weight). A joining user overtakes such
//   users with a higher usage, but each of them at most once, so the
//   bound above grows by at most one turn.
// - A job pinned to a chip (experiment.chip_id) is handed only to that chip.
//   A chip asks "what may I run next?" (PopFor): it takes, in ring order, the
//   first user with a job it may run, and that user's oldest such job. A user
//   skipped because it has nothing for this chip keeps its place.
//
// Not thread-safe: the scheduler calls it with its mutex held.
#pragma once

#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/time/time.h"
#include "job.h"

namespace hxemu::scheduler::internal {

class JobQueue {
 public:
  // `user_weights`: jobs per turn by user; users not named (and weights < 1)
  // get 1.
  // `time_slice`: see above (zero = none).
  explicit JobQueue(absl::flat_hash_map<std::string, int> user_weights = {},
                    absl::Duration time_slice = absl::ZeroDuration());

  // Appends `job` (not null, not already queued) to its user's FIFO.
  // `usage` orders the user if it joins the ring now (see above).
  void Push(std::shared_ptr<Job> job, double usage = 0);

  // Removes and returns the next job chip `chip_id` may run (one pinned to
  // that chip or to none), in round-robin order, as of `now` (time slices).
  // Null if there is none.
  std::shared_ptr<Job> PopFor(uint32_t chip_id,
                              absl::Time now = absl::InfinitePast());

  // Removes `job`; returns false if it is not in the queue.
  bool Remove(const Job& job);

  // Jobs that will be handed out before `job` (which must be queued) if no
  // job is added, removed or pinned: `own` of its user, `others` of other
  // users. Pinning and time slices are ignored (an estimate then).
  // O(jobs of its user + users).
  struct Ahead {
    size_t own = 0;
    size_t others = 0;
  };
  Ahead Position(const Job& job) const;

  // Removes and returns every job.
  std::vector<std::shared_ptr<Job>> TakeAll();

  size_t size() const { return index_.size(); }
  bool empty() const { return index_.empty(); }
  // Jobs queued by `user`.
  size_t SizeFor(const std::string& user) const;
  // Users with queued jobs.
  size_t num_users() const { return users_.size(); }
  // Queued jobs chip `chip_id` may run (pinned to it or to none). O(1).
  size_t RunnableOn(uint32_t chip_id) const;

 private:
  using Fifo = std::list<std::shared_ptr<Job>>;
  struct UserQueue;
  using Ring = std::list<UserQueue*>;
  struct UserQueue {
    std::string user;
    int weight = 1;
    // Jobs handed out in the current turn; < weight without a time slice.
    int served = 0;
    absl::Time turn_start;  // when the current turn's first job was handed out
    // Joined the ring and has not been served since; its usage then, and
    // whether a later user overtook it already.
    bool waiting_first_turn = true;
    bool overtaken = false;
    double usage = 0;
    Fifo jobs;  // oldest first; never empty
    Ring::iterator ring_pos;
  };

  int WeightOf(const std::string& user) const;
  // Takes `job_it` out of `uq`'s FIFO and the indexes; drops `uq` if empty.
  std::shared_ptr<Job> Take(UserQueue* uq, Fifo::iterator job_it);
  void Count(const Job& job, int delta);

  const absl::flat_hash_map<std::string, int> user_weights_;
  const absl::Duration time_slice_;
  // Invariants: `users_` holds exactly the users with queued jobs, `ring_`
  // each of them once (front = whose turn it is), `index_` every queued job
  // with its position in its user's FIFO.
  absl::flat_hash_map<std::string, std::unique_ptr<UserQueue>> users_;
  Ring ring_;
  absl::flat_hash_map<const Job*, Fifo::iterator> index_;
  // Queued jobs pinned to no chip / by chip.
  size_t unpinned_ = 0;
  absl::flat_hash_map<uint32_t, size_t> pinned_;
};

}  // namespace hxemu::scheduler::internal

#include "job_queue.h"

#include <algorithm>
#include <iterator>
#include <utility>

namespace hxemu::scheduler::internal {

JobQueue::JobQueue(absl::flat_hash_map<std::string, int> user_weights,
                   absl::Duration time_slice)
    : user_weights_(std::move(user_weights)),
      time_slice_(std::max(time_slice, absl::ZeroDuration())) {}

int JobQueue::WeightOf(const std::string& user) const {
  auto it = user_weights_.find(user);
  return it == user_weights_.end() ? 1 : std::max(it->second, 1);
}

void JobQueue::Count(const Job& job, int delta) {
  const std::optional<uint32_t> pinned = job.pinned_chip();
  if (!pinned.has_value()) {
    unpinned_ += delta;
    return;
  }
  size_t& count = pinned_[*pinned];
  count += delta;
  if (count == 0) pinned_.erase(*pinned);
}

void JobQueue::Push(std::shared_ptr<Job> job, double usage) {
  std::unique_ptr<UserQueue>& slot = users_[job->user];
  if (slot == nullptr) {
    slot = std::make_unique<UserQueue>();
    slot->user = job->user;
    slot->weight = WeightOf(job->user);
    slot->usage = usage;
    // Join at the back, but before the users at the back that still wait
    // for their first turn, have a higher usage and were not overtaken yet.
    Ring::iterator pos = ring_.end();
    while (pos != ring_.begin()) {
      const UserQueue* other = *std::prev(pos);
      if (!other->waiting_first_turn || other->overtaken ||
          !(usage < other->usage)) {
        break;
      }
      --pos;
    }
    for (Ring::iterator it = pos; it != ring_.end(); ++it) {
      (*it)->overtaken = true;
    }
    slot->ring_pos = ring_.insert(pos, slot.get());
  }
  Count(*job, +1);
  const Job* key = job.get();
  slot->jobs.push_back(std::move(job));
  index_.emplace(key, std::prev(slot->jobs.end()));
}

std::shared_ptr<Job> JobQueue::Take(UserQueue* uq, Fifo::iterator job_it) {
  std::shared_ptr<Job> job = std::move(*job_it);
  uq->jobs.erase(job_it);
  index_.erase(job.get());
  Count(*job, -1);
  if (uq->jobs.empty()) {
    ring_.erase(uq->ring_pos);
    users_.erase(uq->user);  // destroys *uq
  }
  return job;
}

std::shared_ptr<Job> JobQueue::PopFor(uint32_t chip_id, absl::Time now) {
  // Each user is looked at most twice: once more after its turn ran out.
  for (Ring::iterator rit = ring_.begin(); rit != ring_.end();) {
    UserQueue* uq = *rit;
    auto it =
        std::find_if(uq->jobs.begin(), uq->jobs.end(), [&](const auto& j) {
          const std::optional<uint32_t> pinned = j->pinned_chip();
          return !pinned.has_value() || *pinned == chip_id;
        });
    if (it == uq->jobs.end()) {
      ++rit;
      continue;
    }
    if (uq->served >= uq->weight) {
      // Only with a time slice: the turn goes on until the slice is over.
      if (now < uq->turn_start + time_slice_ || ring_.size() == 1) {
        if (ring_.size() == 1 && now >= uq->turn_start + time_slice_) {
          uq->served = 0;  // alone: a new turn right away
        }
      } else {
        uq->served = 0;
        ++rit;
        ring_.splice(ring_.end(), ring_, uq->ring_pos);
        continue;
      }
    }
    if (uq->served == 0) uq->turn_start = now;
    uq->waiting_first_turn = false;
    ++uq->served;
    if (time_slice_ == absl::ZeroDuration() && uq->served >= uq->weight &&
        uq->jobs.size() > 1) {
      // Turn over: to the back of the ring (a no-op if alone).
      uq->served = 0;
      ring_.splice(ring_.end(), ring_, uq->ring_pos);
    }
    return Take(uq, it);  // may destroy *uq
  }
  return nullptr;
}

bool JobQueue::Remove(const Job& job) {
  auto found = index_.find(&job);
  if (found == index_.end()) return false;
  Take(users_.at(job.user).get(), found->second);
  return true;
}

JobQueue::Ahead JobQueue::Position(const Job& job) const {
  Ahead ahead;
  auto found = index_.find(&job);
  if (found == index_.end()) return ahead;
  const UserQueue& mine = *users_.at(job.user);
  ahead.own = static_cast<size_t>(
      std::distance(mine.jobs.begin(), Fifo::const_iterator(found->second)));
  // The job goes out in turn `t` of its user (0 = the current round).
  auto left_of = [](const UserQueue& uq) {
    return static_cast<size_t>(std::max(uq.weight - uq.served, 0));
  };
  const size_t mine_left = left_of(mine);
  const size_t t =
      ahead.own < mine_left ? 0 : 1 + (ahead.own - mine_left) / mine.weight;
  // Until then, a user before it in the ring has turns 0..t, one after it
  // turns 0..t-1; each turn gives up to `weight` jobs (the first one what is
  // left of the current turn), and no more than it has queued.
  bool before = true;
  for (const UserQueue* uq : ring_) {
    if (uq == &mine) {
      before = false;
      continue;
    }
    const size_t left = left_of(*uq);
    const size_t turns = before ? t : (t == 0 ? 0 : t - 1);
    const size_t served = (!before && t == 0) ? 0 : left + turns * uq->weight;
    ahead.others += std::min(uq->jobs.size(), served);
  }
  return ahead;
}

std::vector<std::shared_ptr<Job>> JobQueue::TakeAll() {
  std::vector<std::shared_ptr<Job>> jobs;
  jobs.reserve(index_.size());
  for (UserQueue* uq : ring_) {
    for (std::shared_ptr<Job>& job : uq->jobs) jobs.push_back(std::move(job));
  }
  ring_.clear();
  users_.clear();
  index_.clear();
  unpinned_ = 0;
  pinned_.clear();
  return jobs;
}

size_t JobQueue::SizeFor(const std::string& user) const {
  auto it = users_.find(user);
  return it == users_.end() ? 0 : it->second->jobs.size();
}

size_t JobQueue::RunnableOn(uint32_t chip_id) const {
  auto it = pinned_.find(chip_id);
  return unpinned_ + (it == pinned_.end() ? 0 : it->second);
}

}  // namespace hxemu::scheduler::internal

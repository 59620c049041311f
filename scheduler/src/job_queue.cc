#include "job_queue.h"

#include <iterator>
#include <utility>

namespace hxemu::scheduler::internal {

void JobQueue::Push(std::shared_ptr<Job> job) {
  const Job* key = job.get();
  order_.push_back(std::move(job));
  index_.emplace(key, std::prev(order_.end()));
}

std::shared_ptr<Job> JobQueue::PopFor(uint32_t chip_id) {
  for (auto it = order_.begin(); it != order_.end(); ++it) {
    const std::optional<uint32_t> pinned = (*it)->pinned_chip();
    if (pinned.has_value() && *pinned != chip_id) continue;
    std::shared_ptr<Job> job = std::move(*it);
    index_.erase(job.get());
    order_.erase(it);
    return job;
  }
  return nullptr;
}

bool JobQueue::Remove(const Job& job) {
  auto found = index_.find(&job);
  if (found == index_.end()) return false;
  order_.erase(found->second);
  index_.erase(found);
  return true;
}

size_t JobQueue::Position(const Job& job) const {
  auto found = index_.find(&job);
  if (found == index_.end()) return 0;
  return static_cast<size_t>(
      std::distance(order_.begin(), List::const_iterator(found->second)));
}

std::vector<std::shared_ptr<Job>> JobQueue::TakeAll() {
  std::vector<std::shared_ptr<Job>> jobs(
      std::make_move_iterator(order_.begin()),
      std::make_move_iterator(order_.end()));
  order_.clear();
  index_.clear();
  return jobs;
}

}  // namespace hxemu::scheduler::internal

// Splitting a step's chunks across worker threads.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <memory>
#include <mutex>
#include <type_traits>
#include <vector>

#include "kernel_table.hpp"

namespace gradstep::detail {

// Largest chunk, in elements: one tensor's range, the unit a kernel call takes.
constexpr std::size_t kChunkElems = 1u << 13;

// Runs of consecutive chunks of about equal element count (many small
// tensors share a block, a large tensor spans many). A block is the unit a
// thread claims, so threads balance by element count, not by tensor. How
// many blocks pays depends on the thread count, so blocks are cut per count.
struct Blocks {
  std::size_t target;               // elements per block aimed at (what the thread count decides)
  std::vector<std::size_t> starts;  // block b is chunks [starts[b], starts[b + 1])
  std::size_t count() const { return starts.empty() ? 0 : starts.size() - 1; }
};

// The chunks of a list of tensors, and their blocks for the thread count of
// the step at hand. The chunks are cut once and never change: the kernels
// take them, and the grad-stats pass sums its per-chunk results in chunk
// order, so its result would change with them. Blocks only group chunks
// (any grouping gives the same bits), and are cut again, lazily, when a
// parallel step's thread count asks for other blocks than the last one's.
class WorkPlan {
 public:
  WorkPlan() = default;
  // Empty tensors get no chunk.
  WorkPlan(const TensorView* tensors, std::size_t count);
  // Copies the chunks; the copy cuts its own blocks.
  WorkPlan(const WorkPlan& other) : chunks(other.chunks), elements(other.elements) {}
  WorkPlan& operator=(const WorkPlan&) = delete;

  // The blocks for `threads` threads: those of the previous parallel step
  // when they fit (a division, a load and a comparison), else ones cut
  // before or now, under a lock. Blocks once cut live as long as the plan,
  // so a step still running on older ones is never left with freed ones.
  const Blocks& blocks_for(int threads) const {
    const std::size_t target = block_target(threads);
    const Blocks* last = last_.load(std::memory_order_acquire);
    return last != nullptr && last->target == target ? *last : cut(target);
  }
  // The blocks the last parallel step used, or nullptr (for tests).
  const Blocks* last_blocks() const { return last_.load(std::memory_order_acquire); }

  // Both fixed at construction.
  std::vector<Chunk> chunks;
  std::size_t elements = 0;

 private:
  // About 4 blocks per thread (at least 16), so that a late or preempted
  // thread leaves others something to take, within [one chunk, 64K elements]
  // so that claiming (one atomic per block) stays negligible; and fewer than
  // 2^15 blocks, which the pool's cursor counts in 16 bits (past 2^31
  // elements, blocks grow beyond 64K).
  std::size_t block_target(int threads) const {
    const std::size_t parts = std::size_t(std::max(16, 4 * threads));
    return std::max(std::clamp<std::size_t>(elements / parts, kChunkElems, std::size_t(1) << 16),
                    elements / (std::size_t(1) << 15) + 1);
  }
  const Blocks& cut(std::size_t target) const;

  mutable std::atomic<const Blocks*> last_{nullptr};
  // One entry per target seen (a handful: most thread counts clamp to the
  // same target), guarded by cut_mutex_.
  mutable std::vector<std::unique_ptr<const Blocks>> cut_;
  mutable std::mutex cut_mutex_;
};

using SliceFn = void (*)(void* ctx, std::size_t first, std::size_t last);

// Calls fn(ctx, first, last) on disjoint chunk ranges covering the whole plan
// and returns when all are done. Steps of fewer than `min_parallel` elements
// run on the calling thread alone; larger ones are shared, block by block
// (blocks cut for this thread count), among num_threads() threads: the
// caller and the pool's workers (those still polling after a recent step,
// and, for steps several times larger than min_parallel or back-to-back
// steps, parked ones too, woken for it),
// or with GRADSTEP_THREADING=openmp the team of an OpenMP runtime already
// loaded in the process (torch's).
void run_plan(const WorkPlan& plan, std::size_t min_parallel, SliceFn fn, void* ctx);

template <class F>
void parallel_chunks(const WorkPlan& plan, std::size_t min_parallel, F&& f) {
  using Fn = std::remove_reference_t<F>;
  run_plan(
      plan, min_parallel,
      [](void* ctx, std::size_t first, std::size_t last) { (*static_cast<Fn*>(ctx))(first, last); },
      const_cast<void*>(static_cast<const void*>(&f)));
}

}  // namespace gradstep::detail

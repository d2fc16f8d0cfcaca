// Splitting a step's chunks across worker threads.
#pragma once

#include <cstddef>
#include <type_traits>
#include <vector>

#include "kernel_table.hpp"

namespace gradstep::detail {

// Largest chunk, in elements: one tensor's range, the unit a kernel call takes.
constexpr std::size_t kChunkElems = 1u << 13;

// The chunks of a list of tensors, grouped into blocks: runs of consecutive
// chunks of about equal element count (many small tensors share a block, a
// large tensor spans many). A block is the unit a thread claims, so threads
// balance by element count, not by tensor.
struct WorkPlan {
  std::vector<Chunk> chunks;
  std::vector<std::size_t> block_starts;  // block b is chunks [starts[b], starts[b + 1])
  std::size_t elements = 0;
  std::size_t blocks() const { return block_starts.empty() ? 0 : block_starts.size() - 1; }
};

// Plans tensors of the given sizes (zero-sized ones get no chunk).
WorkPlan plan_work(const std::size_t* sizes, std::size_t count);

using SliceFn = void (*)(void* ctx, std::size_t first, std::size_t last);

// Calls fn(ctx, first, last) on disjoint chunk ranges covering the whole plan
// and returns when all are done. Steps of fewer than `min_parallel` elements
// run on the calling thread alone; larger ones are shared, block by block,
// among num_threads() threads: the caller and the pool's workers (those
// still polling after a recent step, and, for steps several times larger
// than min_parallel or back-to-back steps, parked ones too, woken for it),
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

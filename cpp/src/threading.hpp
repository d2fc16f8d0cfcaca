// Splitting a step's chunks across worker threads.
#pragma once

#include <cstddef>
#include <type_traits>

#include "kernel_table.hpp"

namespace gradstep::detail {

using SliceFn = void (*)(void* ctx, std::size_t first, std::size_t last);

// Calls fn(ctx, first, last) on disjoint slices covering [0, count) of the
// chunks, from the calling thread and, for large steps, pool workers; returns
// when all are done. Slices are balanced by element count.
void run_slices(const Chunk* chunks, std::size_t count, SliceFn fn, void* ctx);

template <class F>
void parallel_chunks(const Chunk* chunks, std::size_t count, F&& f) {
  using Fn = std::remove_reference_t<F>;
  run_slices(
      chunks, count,
      [](void* ctx, std::size_t first, std::size_t last) { (*static_cast<Fn*>(ctx))(first, last); },
      const_cast<void*>(static_cast<const void*>(&f)));
}

}  // namespace gradstep::detail

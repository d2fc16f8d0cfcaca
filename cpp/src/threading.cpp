#include "threading.hpp"

#include <atomic>

#include "gradstep/isa.hpp"

namespace gradstep {
namespace {
std::atomic<int> g_threads{1};
}

void set_num_threads(int n) { g_threads.store(n < 1 ? 1 : n); }
int num_threads() { return g_threads.load(); }

void detail::run_slices(const Chunk*, std::size_t count, SliceFn fn, void* ctx) {
  if (count > 0) fn(ctx, 0, count);
}

}  // namespace gradstep

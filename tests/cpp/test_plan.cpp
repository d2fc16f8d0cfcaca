// White-box tests of a TensorSet's work plan (cpp/src/tensor_set.hpp and
// threading.hpp, not installed): the blocks a parallel step hands out follow
// the thread count in force at the step, not the one at construction, and
// the results stay those of one thread. Nothing here depends on timing.
#include <gradstep/gradstep.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "check.hpp"
#include "tensor_set.hpp"

namespace gradstep_test {
namespace {

// 1M elements: enough that the block size depends on the thread count
// (64K-element blocks on up to 4 threads, 32K on 8, 16K on 16).
constexpr std::size_t kElements = std::size_t(1) << 20;

struct Buffers {
  std::vector<float> p, g, m, v;
  Buffers() : p(kElements), g(kElements), m(kElements), v(kElements) {
    for (std::size_t i = 0; i < kElements; ++i) {
      p[i] = float(std::sin(0.37 * double(i)));
      g[i] = float(std::cos(1.3 * double(i)));
    }
  }
  gradstep::TensorView view() {
    gradstep::TensorView t;
    t.param = p.data();
    t.grad = g.data();
    t.state[0] = m.data();
    t.state[1] = v.data();
    t.size = kElements;
    return t;
  }
};

const gradstep::detail::WorkPlan& plan_of(const gradstep::TensorSet& set) {
  return gradstep::detail::TensorSetImpl::of(set).plan;
}

std::size_t last_block_count(const gradstep::TensorSet& set) {
  const gradstep::detail::Blocks* blocks = plan_of(set).last_blocks();
  return blocks != nullptr ? blocks->count() : 0;
}

// The block count a set built and stepped under `threads` threads uses.
std::size_t block_count_built_under(int threads, const gradstep::AdamOptions& adam) {
  gradstep::set_num_threads(threads);
  Buffers b;
  const gradstep::TensorView t = b.view();
  gradstep::TensorSet set(&t, 1, gradstep::state_mask(adam));
  set.step(adam, 1);
  return last_block_count(set);
}

// The chunk ranges run_plan hands to its slice function: with the pool, one
// call per block.
std::vector<std::pair<std::size_t, std::size_t>> slices(const gradstep::detail::WorkPlan& plan) {
  std::mutex mutex;
  std::vector<std::pair<std::size_t, std::size_t>> out;
  // min_parallel 0: shared with the pool (and its parked workers woken)
  // whatever the size, as any parallel step of this size would be.
  gradstep::detail::parallel_chunks(plan, 0, [&](std::size_t first, std::size_t last) {
    std::lock_guard<std::mutex> lock(mutex);
    out.emplace_back(first, last);
  });
  std::sort(out.begin(), out.end());
  return out;
}

bool covers(const std::vector<std::pair<std::size_t, std::size_t>>& ranges, std::size_t chunks) {
  std::size_t next = 0;
  for (const auto& [first, last] : ranges) {
    if (first != next || last <= first) return false;
    next = last;
  }
  return next == chunks;
}

}  // namespace

void run_plan_tests() {
  gradstep::AdamOptions adam;
  adam.lr = 1e-2;
  gradstep::StepControl clip;  // the grad-stats pass (a per-chunk sum) runs too
  clip.max_grad_norm = 1.0;
  constexpr int kSteps = 4;

  const std::size_t blocks_1 = block_count_built_under(1, adam);
  const std::size_t blocks_4 = block_count_built_under(4, adam);
  const std::size_t blocks_8 = block_count_built_under(8, adam);
  // One thread steps on the caller and needs no blocks.
  check(blocks_1 == 0 && blocks_4 == 16 && blocks_8 == 32, "blocks cut per thread count (4 per thread, >= 16)");

  // The reference: every step on one thread.
  gradstep::set_num_threads(1);
  Buffers want;
  std::vector<gradstep::StepReport> want_reports;
  {
    const gradstep::TensorView t = want.view();
    gradstep::TensorSet set(&t, 1, gradstep::state_mask(adam));
    for (int k = 1; k <= kSteps; ++k) want_reports.push_back(set.step(adam, k, clip));
  }

  // Built under one thread, then stepped under 8, 2, 8 and 16.
  Buffers got;
  const gradstep::TensorView t = got.view();
  gradstep::TensorSet set(&t, 1, gradstep::state_mask(adam));
  const std::size_t chunks = plan_of(set).chunks.size();
  check(plan_of(set).last_blocks() == nullptr, "no blocks cut before a parallel step");
  const int threads[kSteps] = {8, 2, 8, 16};
  const std::size_t expected_blocks[kSteps] = {32, 16, 32, 64};
  bool same_reports = true;
  for (int k = 1; k <= kSteps; ++k) {
    gradstep::set_num_threads(threads[k - 1]);
    const gradstep::StepReport r = set.step(adam, k, clip);
    const gradstep::StepReport& w = want_reports[std::size_t(k - 1)];
    same_reports = same_reports && r.found_inf == w.found_inf && r.skipped == w.skipped &&
                   std::memcmp(&r.grad_norm, &w.grad_norm, sizeof(double)) == 0;
    const std::string on = " (step " + std::to_string(k) + ", " + std::to_string(threads[k - 1]) + " threads)";
    check(last_block_count(set) == expected_blocks[k - 1],
          ("the step used blocks cut for its thread count" + on).c_str());
    const auto handed_out = slices(plan_of(set));
    check(handed_out.size() == expected_blocks[k - 1] && covers(handed_out, chunks),
          ("the pool is handed one slice per block, covering every chunk" + on).c_str());
  }
  check(same_reports, "grad norms of the re-blocked steps = on one thread, bit for bit");
  check(got.p == want.p && got.m == want.m && got.v == want.v,
        "params and states of the re-blocked steps = on one thread");

  // A copy cuts its own blocks when it first steps in parallel.
  gradstep::set_num_threads(8);
  gradstep::TensorSet copy = set;
  check(plan_of(copy).last_blocks() == nullptr, "a copy starts with no blocks");
  copy.step(adam, kSteps + 1);
  check(last_block_count(copy) == 32, "a copy cuts blocks for its thread count");
}

}  // namespace gradstep_test

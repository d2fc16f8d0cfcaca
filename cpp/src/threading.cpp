// Threads for large steps: a small persistent pool of our own. (With
// GRADSTEP_THREADING=openmp the pool hands its blocks to the OpenMP team of a
// runtime already loaded in the process instead: openmp_team.cpp.)
//
// The pool polls briefly after a step, yielding its core to any other thread
// that wants it, then parks.
//
// How a step runs: the caller publishes the job (a generation number packed
// with the range of unclaimed blocks, front and back, in one 64-bit atomic),
// and then claims blocks itself like any worker. Blocks are claimed one at a
// time with a compare-and-swap that also checks the generation, so a worker
// that arrives late just finds fewer (or no) blocks left instead of stalling
// the caller, and a worker that oversleeps a whole job can never claim a
// block of the next one. The caller claims from the front and the workers
// from the back, so that with two threads each runs the same half of the
// blocks step after step (give or take the block where they meet) and finds
// it in its own core's cache: claimed alternately from one end, the blocks
// changed hands between steps, and a 64K-element Adam step on 2 threads took
// longer than on one. The caller
// returns once every block is done; a worker touches the job's context only
// between a successful claim and its "done" increment, so the caller's stack
// stays valid for it.
//
// Waking a parked worker is a futex syscall that costs the caller ~16 us on
// the test VM (an IPI to a halted vCPU), more than a mid-sized step, and the
// worker then needs tens of microseconds more to get going. So the caller
// wakes parked workers only when that pays: for steps large enough, or when
// steps come back to back (the previous one ended under 1 ms ago), since the
// woken workers then stay awake for the steps that follow. Otherwise a step
// uses whichever workers are still polling, if any, and the caller does the
// rest.
//
// Results do not depend on which thread runs which block: the kernels are
// element-wise, so any split gives bit-identical output.
#include "threading.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "gradstep/isa.hpp"
#include "openmp_team.hpp"

#if defined(__linux__)
#include <pthread.h>
#include <sched.h>
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace gradstep {
namespace {

// More worker threads than this is a typo, not a machine.
constexpr int kMaxThreads = 1024;

using Micros = std::chrono::microseconds;
// A worker polls this long after its last block before parking: long enough
// that back-to-back steps (a benchmark, a loop over micro-batches) find it
// awake, short enough that it does not hold a core from torch's threads for
// the forward and backward passes that follow a step. Past kHotSpin it polls
// with sched_yield, so it gives way to any other thread wanting its core.
constexpr Micros kSpin{50};
constexpr Micros kHotSpin{5};
// A step that starts within this time of the previous one's end counts as
// back to back and wakes parked workers whatever its size.
constexpr Micros kBackToBack{1000};
// The caller spins this long for the workers' last blocks, then sleeps, so
// that a worker preempted mid-block (say by torch's spinning threads) can
// run on the caller's core.
constexpr Micros kCallerSpin{200};
// Steps of at least this many times their min_parallel wake parked workers:
// there, the caller's ~16 us for the wake-up is a small part of the step.
constexpr std::size_t kWakeFactor = 32;

void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#else
  std::this_thread::yield();
#endif
}

// Positive integer at the start of an environment variable (OMP_NUM_THREADS
// may be a list, "4,2": the first entry is the outer level), or 0.
int env_threads(const char* name) {
  const char* s = std::getenv(name);
  if (s == nullptr || *s == '\0') return 0;
  char* end = nullptr;
  const long n = std::strtol(s, &end, 10);
  if (end == s || (*end != '\0' && *end != ',') || n < 1) return 0;
  return static_cast<int>(std::min<long>(n, kMaxThreads));
}

int cpus_available() {
#if defined(__linux__)
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) return std::max(1, CPU_COUNT(&set));
#endif
  return std::max(1u, std::thread::hardware_concurrency());
}

// GRADSTEP_NUM_THREADS, else OMP_NUM_THREADS, else the CPUs this process may
// run on (its affinity mask, which taskset, cgroup cpusets and torch's
// launchers set; not the machine's core count). Invalid values are ignored.
int default_threads() {
  if (int n = env_threads("GRADSTEP_NUM_THREADS")) return n;
  if (int n = env_threads("OMP_NUM_THREADS")) return n;
  return cpus_available();
}

std::atomic<int>& threads_slot() {
  static std::atomic<int> slot{default_threads()};
  return slot;
}

class Pool {
 public:
  Pool() = default;
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;

  // Runs the blocks on the caller plus up to threads-1 workers; parked workers
  // are woken only if the step has at least `wake_min` elements. Only one
  // job at a time: a second caller (another Python thread stepping another
  // set) runs its step alone instead of waiting or adding threads.
  void run(const detail::WorkPlan& plan, const detail::Blocks& blocks, int threads, std::size_t wake_min,
           detail::SliceFn fn, void* ctx) {
    const std::size_t all = plan.chunks.size();
    std::unique_lock<std::mutex> lock(run_mutex_, std::try_to_lock);
    if (!lock.owns_lock()) return fn(ctx, 0, all);
    if (detail::run_on_openmp_team(blocks, threads, fn, ctx)) return;
    resize(threads - 1);
    const auto now = std::chrono::steady_clock::now();
    const bool wake = plan.elements >= wake_min || now - last_end_ < kBackToBack;
    struct Stamp {  // records this step's end, however it returns
      Pool& pool;
      ~Stamp() { pool.last_end_ = std::chrono::steady_clock::now(); }
    } stamp{*this};
    // seq_cst, paired with the worker's sleepers_ increment (see wait_for_job).
    if (!wake && sleepers_.load() == static_cast<int>(workers_.size())) return fn(ctx, 0, all);
    fn_.store(fn, std::memory_order_relaxed);
    ctx_.store(ctx, std::memory_order_relaxed);
    starts_.store(blocks.starts.data(), std::memory_order_relaxed);
    const auto count = static_cast<std::uint32_t>(blocks.count());  // < 2^16: block_target
    blocks_.store(count, std::memory_order_release);
    done_.store(0, std::memory_order_relaxed);
    const std::uint32_t gen = ++generation_;
    // seq_cst, paired with the worker's sleepers_ increment: either the
    // worker sees this generation before it parks, or we see it parked.
    cursor_.store((std::uint64_t(gen) << 32) | (std::uint64_t(count) << 16));
    if (wake && sleepers_.load() > 0) {
      { std::lock_guard<std::mutex> park(park_mutex_); }
      park_cv_.notify_all();
    }
    work(gen, false);
    wait_done(count);
  }

 private:
  static std::uint32_t generation_of(std::uint64_t cursor) { return std::uint32_t(cursor >> 32); }

  // Claims and runs blocks of job `gen` until none are left: the cursor's low
  // 32 bits are back << 16 | front, the unclaimed blocks [front, back); the
  // caller takes the front one, workers the back one. Every claim changes the
  // cursor (front only grows, back only shrinks), so a stale compare-and-swap
  // always fails; a drained job (front == back) can be claimed no more.
  void work(std::uint32_t gen, bool from_back) {
    std::uint64_t cur = cursor_.load(std::memory_order_acquire);
    for (;;) {
      if (generation_of(cur) != gen) return;
      const std::uint32_t front = std::uint32_t(cur) & 0xffffu;
      const std::uint32_t back = (std::uint32_t(cur) >> 16) & 0xffffu;
      if (front >= back) return;
      const std::uint32_t block = from_back ? back - 1 : front;
      const std::uint64_t next = from_back ? cur - (std::uint64_t(1) << 16) : cur + 1;
      if (!cursor_.compare_exchange_weak(cur, next, std::memory_order_acq_rel, std::memory_order_acquire))
        continue;
      const std::size_t* starts = starts_.load(std::memory_order_relaxed);
      fn_.load(std::memory_order_relaxed)(ctx_.load(std::memory_order_relaxed), starts[block],
                                          starts[block + 1]);
      // seq_cst, paired with caller_sleeps_: either the caller sees this
      // block done before it sleeps, or we see it asleep and wake it.
      if (done_.fetch_add(1) + 1 == blocks_.load(std::memory_order_relaxed) && caller_sleeps_.load()) {
        { std::lock_guard<std::mutex> lock(done_mutex_); }
        done_cv_.notify_one();
      }
      cur = cursor_.load(std::memory_order_acquire);
    }
  }

  void wait_done(std::uint32_t blocks) {
    const auto start = std::chrono::steady_clock::now();
    for (int spins = 0; done_.load(std::memory_order_acquire) != blocks; ++spins) {
      cpu_relax();
      if ((spins & 63) == 63 && std::chrono::steady_clock::now() - start > kCallerSpin) {
        std::unique_lock<std::mutex> lock(done_mutex_);
        caller_sleeps_.store(true);
        done_cv_.wait(lock, [&] { return done_.load() == blocks; });
        caller_sleeps_.store(false);
        return;
      }
    }
  }

  void worker_loop() {
    std::uint32_t seen = generation_of(cursor_.load());
    for (;;) {
      const std::uint32_t gen = wait_for_job(seen);
      if (stop_.load(std::memory_order_acquire)) return;
      seen = gen;
      work(gen, true);
    }
  }

  // Polls (kHotSpin spinning, then yielding) for kSpin, then parks; returns
  // the new generation once there is one (or on stop).
  std::uint32_t wait_for_job(std::uint32_t seen) {
    const auto start = std::chrono::steady_clock::now();
    for (int spins = 0;; ++spins) {
      const std::uint32_t gen = generation_of(cursor_.load(std::memory_order_acquire));
      if (gen != seen || stop_.load(std::memory_order_relaxed)) return gen;
      if ((spins & 63) == 63) {
        const auto waited = std::chrono::steady_clock::now() - start;
        if (waited > kSpin) break;
        if (waited > kHotSpin) {
          std::this_thread::yield();
          continue;
        }
      }
      cpu_relax();
    }
    std::unique_lock<std::mutex> park(park_mutex_);
    sleepers_.fetch_add(1);
    std::uint32_t gen = seen;
    park_cv_.wait(park, [&] {
      gen = generation_of(cursor_.load());
      return gen != seen || stop_.load();
    });
    sleepers_.fetch_sub(1);
    return gen;
  }

  // Called with run_mutex_ held.
  void resize(int workers) {
    if (static_cast<int>(workers_.size()) == workers) return;
    if (!workers_.empty()) {
      {
        std::lock_guard<std::mutex> park(park_mutex_);
        stop_.store(true);
      }
      park_cv_.notify_all();
      for (std::thread& t : workers_) t.join();
      workers_.clear();
      stop_.store(false);
    }
    for (int i = 0; i < workers; ++i) workers_.emplace_back([this] { worker_loop(); });
  }

  std::mutex run_mutex_;
  std::vector<std::thread> workers_;
  // Written under run_mutex_:
  std::uint32_t generation_ = 0;
  std::chrono::steady_clock::time_point last_end_{};

  // The current job, published by the release of cursor_.
  std::atomic<detail::SliceFn> fn_{nullptr};
  std::atomic<void*> ctx_{nullptr};
  std::atomic<const std::size_t*> starts_{nullptr};
  std::atomic<std::uint32_t> blocks_{0};
  alignas(64) std::atomic<std::uint64_t> cursor_{0};  // generation << 32 | back << 16 | front
  alignas(64) std::atomic<std::uint32_t> done_{0};
  alignas(64) std::atomic<int> sleepers_{0};
  std::atomic<bool> stop_{false};
  std::mutex park_mutex_;
  std::condition_variable park_cv_;
  std::atomic<bool> caller_sleeps_{false};
  std::mutex done_mutex_;
  std::condition_variable done_cv_;
};

// The pool is created on first use and never destroyed: joining workers from
// a static destructor at interpreter exit is fragile, and parked threads cost
// nothing. A forked child has none of the parent's threads (and perhaps a
// locked mutex), so it forgets the parent's pool and builds its own.
std::atomic<Pool*> g_pool{nullptr};

#if defined(__linux__)
// Registered when the library loads (openmp_team.cpp registers its own).
const int g_atfork_registered =
    pthread_atfork(nullptr, nullptr, [] { g_pool.store(nullptr, std::memory_order_relaxed); });
#endif

Pool& pool() {
  Pool* p = g_pool.load(std::memory_order_acquire);
  if (p != nullptr) return *p;
  Pool* fresh = new Pool;
  if (g_pool.compare_exchange_strong(p, fresh, std::memory_order_acq_rel)) return *fresh;
  delete fresh;  // another thread won the race; it has no threads yet
  return *p;
}

}  // namespace

void set_num_threads(int n) {
  if (n < 1 || n > kMaxThreads)
    throw std::invalid_argument("number of threads must be in [1, " + std::to_string(kMaxThreads) +
                                "], got " + std::to_string(n));
  threads_slot().store(n);
}
int num_threads() { return threads_slot().load(); }

float* detail::stage_scratch(std::size_t floats) {
  struct Scratch {
    float* data = nullptr;
    std::size_t size = 0;
    ~Scratch() { std::free(data); }
  };
  thread_local Scratch scratch;
  if (scratch.size < floats) {
    // Whole cache lines, so the kernels' loops over it start aligned.
    const std::size_t bytes = (floats * sizeof(float) + 63) / 64 * 64;
    void* fresh = std::aligned_alloc(64, bytes);
    if (fresh == nullptr) throw std::bad_alloc();
    std::free(scratch.data);
    scratch.data = static_cast<float*>(fresh);
    scratch.size = bytes / sizeof(float);
  }
  return scratch.data;
}

detail::WorkPlan::WorkPlan(const TensorView* tensors, std::size_t count) {
  for (std::size_t t = 0; t < count; ++t) {
    const std::size_t size = tensors[t].size;
    for (std::size_t b = 0; b < size; b += kChunkElems)
      chunks.push_back({t, b, std::min(size, b + kChunkElems)});
    elements += size;
  }
}

const detail::Blocks& detail::WorkPlan::cut(std::size_t target) const {
  std::lock_guard<std::mutex> lock(cut_mutex_);
  for (const auto& blocks : cut_)
    if (blocks->target == target) {
      last_.store(blocks.get(), std::memory_order_release);
      return *blocks;
    }
  auto blocks = std::make_unique<Blocks>();
  blocks->target = target;
  std::size_t in_block = 0;
  for (std::size_t c = 0; c < chunks.size(); ++c) {
    if (in_block == 0) blocks->starts.push_back(c);
    in_block += chunks[c].end - chunks[c].begin;
    if (in_block >= target) in_block = 0;
  }
  if (!chunks.empty()) blocks->starts.push_back(chunks.size());
  cut_.push_back(std::move(blocks));
  last_.store(cut_.back().get(), std::memory_order_release);
  return *cut_.back();
}

void detail::run_plan(const WorkPlan& plan, std::size_t min_parallel, SliceFn fn, void* ctx) {
  const std::size_t all = plan.chunks.size();
  if (all == 0) return;
  // Read once: blocks and team are sized by the same count, whatever another
  // thread's set_num_threads does meanwhile.
  const int threads = num_threads();
  if (threads <= 1 || plan.elements < min_parallel) return fn(ctx, 0, all);
  const Blocks& blocks = plan.blocks_for(threads);
  if (blocks.count() < 2) return fn(ctx, 0, all);
  pool().run(plan, blocks, threads, min_parallel * kWakeFactor, fn, ctx);
}

}  // namespace gradstep

// Borrowing the OpenMP team of a runtime already loaded in the process,
// opted into with GRADSTEP_THREADING=openmp; otherwise steps run on the own
// pool (threading.cpp). Kept apart from the pool because it is a different
// way of running the same blocks, with its own risks (below).
//
// Why offer the borrowed team: torch runs its ops on an OpenMP team whose
// threads spin for ~10 ms after every op (measured on the 2-core test VM).
// Threads of our own, right after a torch op, compete with those spinning
// threads for the same cores (bench/pool_vs_openmp.py: a 1M-element Adam
// step after a torch op, 597 us on the borrowed team, 902 us on the own
// pool). Handing our blocks to torch's team (GOMP_parallel, found with
// dlopen(RTLD_NOLOAD), never loading a runtime ourselves) keeps one set of
// threads per process. Why it is not the default: see pool_forced.
//
// Why not link OpenMP ourselves: with no torch around, libgomp's spinning
// would burn a core for milliseconds after every step of a numpy training
// loop; and a wheel linking its own libgomp can end up as a second runtime
// beside torch's (wheels that bundle it under a hashed name).
#include "openmp_team.hpp"

#include <atomic>
#include <cstdlib>
#include <string>

#if defined(__linux__)
#include <pthread.h>
#endif
#if defined(__GLIBC__)
#include <dlfcn.h>
#include <link.h>

#include <cstring>
#endif

namespace gradstep::detail {
namespace {

// GOMP_parallel(fn, data, num_threads, flags): runs fn(data) on a team of
// num_threads (the caller included) and returns when all are done. GNU
// libgomp's entry point, also exported by LLVM's libomp and Intel's libiomp5.
using OpenmpParallel = void (*)(void (*)(void*), void*, unsigned, unsigned);

// Set in a forked child: the parent's OpenMP team does not exist there, and
// libgomp would wait for it forever.
std::atomic<bool> g_forked{false};

#if defined(__linux__)
// Registered when the library loads, so that a child forked before the first
// parallel step is marked too.
const int g_atfork_registered =
    pthread_atfork(nullptr, nullptr, [] { g_forked.store(true, std::memory_order_relaxed); });
#endif

// Borrowing is opt-in (GRADSTEP_THREADING=openmp): GOMP_parallel waits for
// every thread of the team, so on a busy machine one descheduled team thread
// stalls the whole step (seen: a 100k-element Adam step at 12 ms instead of
// 70 us while another process loaded the cores), where the own pool's caller
// simply claims the blocks that no worker took.
bool pool_forced() {
  static const bool forced = [] {
    const char* s = std::getenv("GRADSTEP_THREADING");
    return s == nullptr || std::string(s) != "openmp";
  }();
  return forced;
}

#if defined(__GLIBC__)
// The GOMP_parallel of an OpenMP runtime already loaded in the process, or
// nullptr. Rescans the loaded objects only when their count changed (cheap
// to ask: dl_iterate_phdr's first callback carries it). Not reentrant.
OpenmpParallel loaded_openmp() {
  if (g_forked.load(std::memory_order_relaxed) || pool_forced()) return nullptr;
  static unsigned long long scanned = ~0ull;
  static OpenmpParallel found = nullptr;
  unsigned long long adds = 0;
  dl_iterate_phdr(
      [](dl_phdr_info* info, std::size_t size, void* out) {
        if (size >= offsetof(dl_phdr_info, dlpi_adds) + sizeof info->dlpi_adds)
          *static_cast<unsigned long long*>(out) = info->dlpi_adds;
        return 1;
      },
      &adds);
  if (adds == scanned && adds != 0) return found;
  std::string path;
  dl_iterate_phdr(
      [](dl_phdr_info* info, std::size_t, void* out) {
        const char* name = info->dlpi_name;
        if (name == nullptr) return 0;
        if (std::strstr(name, "/libgomp") || std::strstr(name, "/libiomp") || std::strstr(name, "/libomp")) {
          *static_cast<std::string*>(out) = name;
          return 1;
        }
        return 0;
      },
      &path);
  found = nullptr;
  // RTLD_NOLOAD: only a runtime someone else loaded. The handle is never
  // closed, so the library stays loaded while we may call into it.
  if (!path.empty())
    if (void* lib = dlopen(path.c_str(), RTLD_LAZY | RTLD_NOLOAD))
      found = reinterpret_cast<OpenmpParallel>(dlsym(lib, "GOMP_parallel"));
  scanned = adds;
  return found;
}
#else
OpenmpParallel loaded_openmp() { return nullptr; }
#endif

// One job on an OpenMP team: every member claims blocks from a shared counter.
struct OpenmpJob {
  const Blocks* blocks;
  SliceFn fn;
  void* ctx;
  std::atomic<std::size_t> next{0};

  static void body(void* data) {
    auto* job = static_cast<OpenmpJob*>(data);
    const std::size_t* starts = job->blocks->starts.data();
    const std::size_t count = job->blocks->count();
    for (std::size_t b; (b = job->next.fetch_add(1, std::memory_order_relaxed)) < count;)
      job->fn(job->ctx, starts[b], starts[b + 1]);
  }
};

}  // namespace

bool run_on_openmp_team(const Blocks& blocks, int threads, SliceFn fn, void* ctx) {
  OpenmpParallel omp = loaded_openmp();
  if (omp == nullptr) return false;
  OpenmpJob job{&blocks, fn, ctx};
  omp(&OpenmpJob::body, &job, static_cast<unsigned>(threads), 0);
  return true;
}

}  // namespace gradstep::detail

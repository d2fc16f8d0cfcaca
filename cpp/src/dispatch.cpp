// Run-time choice of the kernel target: the best one the CPU supports, or
// the one named by GRADSTEP_ISA / set_isa (for tests and comparisons).
#include <atomic>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "dispatch.hpp"
#include "gradstep/isa.hpp"

namespace gradstep {
namespace scalar {
detail::KernelTable kernel_table();
}
#ifdef GRADSTEP_HAVE_AVX2
namespace avx2 {
detail::KernelTable kernel_table();
}
#endif
#ifdef GRADSTEP_HAVE_AVX512
namespace avx512 {
detail::KernelTable kernel_table();
}
#endif

namespace {

bool cpu_supports(Isa isa) {
  switch (isa) {
    case Isa::scalar:
      return true;
#if defined(GRADSTEP_HAVE_AVX2)
    case Isa::avx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
#if defined(GRADSTEP_HAVE_AVX512)
    case Isa::avx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
             __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw");
#endif
    default:
      return false;
  }
}

detail::KernelTable table_for(Isa isa) {
  switch (isa) {
#ifdef GRADSTEP_HAVE_AVX2
    case Isa::avx2:
      return avx2::kernel_table();
#endif
#ifdef GRADSTEP_HAVE_AVX512
    case Isa::avx512:
      return avx512::kernel_table();
#endif
    default:
      return scalar::kernel_table();
  }
}

constexpr Isa kAllIsas[] = {Isa::scalar, Isa::avx2, Isa::avx512};

Isa parse_isa(const std::string& name) {
  for (Isa isa : kAllIsas)
    if (name == isa_name(isa)) {
      if (!cpu_supports(isa))
        throw std::invalid_argument("ISA target '" + name +
                                    "' is not supported by this CPU or not compiled in");
      return isa;
    }
  throw std::invalid_argument("unknown ISA target '" + name + "' (known: scalar, avx2, avx512)");
}

Isa initial_isa() {
  Isa best = Isa::scalar;
  for (Isa isa : kAllIsas)
    if (cpu_supports(isa)) best = isa;
  if (const char* env = std::getenv("GRADSTEP_ISA"); env && *env) best = parse_isa(env);
  return best;
}

const detail::KernelTable& table_ref(Isa isa) {
  static const detail::KernelTable tables[] = {table_for(Isa::scalar), table_for(Isa::avx2),
                                               table_for(Isa::avx512)};
  return tables[static_cast<int>(isa)];
}

std::atomic<Isa>& active_slot() {
  static std::atomic<Isa> slot{initial_isa()};
  return slot;
}

}  // namespace

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::avx2:
      return "avx2";
    case Isa::avx512:
      return "avx512";
    default:
      return "scalar";
  }
}

std::vector<Isa> available_isas() {
  std::vector<Isa> out;
  for (Isa isa : kAllIsas)
    if (cpu_supports(isa)) out.push_back(isa);
  return out;
}

Isa active_isa() { return active_slot().load(); }

void set_isa(const std::string& name) { active_slot().store(parse_isa(name)); }

const detail::KernelTable& detail::kernels() { return table_ref(active_slot().load()); }

}  // namespace gradstep

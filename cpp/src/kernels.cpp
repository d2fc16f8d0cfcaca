// The update kernels, written once and compiled once per ISA target. CMake
// builds this file several times with different -m flags and defines
// GRADSTEP_TARGET to the target's name; everything lives in
// gradstep::<target>, so no symbol compiled with wide-vector flags can be
// picked by the linker for another target (the ODR pitfall of per-ISA builds).
//
// Only headers that define no inline functions are included here, and math is
// done with compiler builtins, for the same reason.
//
// Bit-identity across targets: the loops are plain element-wise IEEE
// arithmetic (+, -, *, /, sqrt are correctly rounded in every SIMD width) and
// the build passes -ffp-contract=off, so no target fuses a multiply-add that
// another does not. Coefficients are computed in double per call, identically
// on every target, then rounded once to the element type.
#include <type_traits>

#include "kernel_table.hpp"

#ifndef GRADSTEP_TARGET
#error "GRADSTEP_TARGET must name the ISA target this file is compiled for"
#endif

namespace gradstep::GRADSTEP_TARGET {
namespace {
#include "algorithms/half.inl"
#include "algorithms/common.inl"
#include "algorithms/sgd.inl"
#include "algorithms/adagrad.inl"
#include "algorithms/adadelta.inl"
#include "algorithms/rmsprop.inl"
#include "algorithms/adam.inl"
#include "algorithms/adamax.inl"
#include "algorithms/radam.inl"
#include "algorithms/nadam.inl"
#include "algorithms/prodigy.inl"
#include "algorithms/dadapt_adam.inl"
#include "algorithms/dadapt_sgd.inl"
#include "algorithms/schedule_free.inl"
#include "algorithms/lion.inl"
#include "algorithms/grad_stats.inl"
#include "algorithms/lamb.inl"  // after grad_stats.inl: its clip pass sums as that one does
#include "algorithms/adafactor.inl"
#include "algorithms/stream.inl"
#include "algorithms/steps.inl"
}  // namespace

// Each algorithms/*.inl defines chunks(const XOptions&, ...) for its
// optimizer, or step(const XOptions&, ...) when it needs more than one pass
// or reports carried values, and switch_mode(const XOptions&, ...) when it
// declares a Mode.
#define GRADSTEP_DETAIL_KERNEL_ENTRY(O) \
  static_cast<detail::StepFn<O>>(&step), static_cast<detail::SwitchFn<O>>(&switch_mode),
detail::KernelTable kernel_table() {
  return {GRADSTEP_OPTIMIZERS(GRADSTEP_DETAIL_KERNEL_ENTRY) & grad_stats_chunks, &stream_chunks};
}
#undef GRADSTEP_DETAIL_KERNEL_ENTRY

}  // namespace gradstep::GRADSTEP_TARGET

// The interface between the ISA-independent driver and the kernels compiled
// once per target. Plain data and function pointers only: nothing here may
// define an inline function, because every target's translation unit includes
// it and the linker would keep one (arbitrary) target's copy for all.
#pragma once

#include <cstddef>
#include <cstdint>

#include "gradstep/optim.hpp"

namespace gradstep::detail {

// A contiguous range [begin, end) of one tensor: the unit of work a thread takes.
struct Chunk {
  std::size_t tensor, begin, end;
};

struct Job {
  const TensorView* tensors;
  const Chunk* chunks;
  std::int64_t step;   // 1-based number of this update
  double grad_scale;   // every gradient is multiplied by this: -1 to maximize, times a clipping factor
  // A step over param groups whose options differ (TensorSet::step_groups):
  // tensor t uses group_options[group_of[t]], an array of the step's Options
  // type, where the kernel reads per-group options (group_options_of in
  // common.inl); the carried values and the global options are the step's own.
  // Null: every tensor uses the step's options.
  const void* group_options = nullptr;
  const std::uint32_t* group_of = nullptr;
  // bf16/f16 params: how results are rounded back (StepControl).
  Rounding rounding = Rounding::nearest;
  std::uint64_t seed = 0;
  std::size_t tensor_count = 0;
  // The optimizer's step is its one element-wise pass (chunks(), steps.inl),
  // which writes the param and every state it has: a staged chunk is stored
  // back without first checking that it changed (that check is for the
  // passes of a multi-pass step that only read).
  bool one_pass = false;
};

// Float32 scratch of at least `floats` elements, 64-byte aligned, owned by
// the calling thread and reused by its next call (the staging of bf16/f16
// chunks; kept out of the per-target code, which may not instantiate
// library templates).
float* stage_scratch(std::size_t floats);

// Per-chunk gradient statistics, combined by the driver in chunk order so the
// result does not depend on how chunks were spread over threads.
struct GradStats {
  double sum_squares;
  double nonfinite;  // NaN if the chunk holds a NaN or an infinity, else 0
};
using GradStatsFn = void (*)(const Job&, std::size_t first, std::size_t last, GradStats* out);

// The bandwidth probe's only option: which state slots it streams.
struct StreamOptions {
  unsigned slot_mask;
};

// Updates chunks [first, last) of the job (one pass over the elements).
template <class Options>
using KernelFn = void (*)(const Options&, const Job&, std::size_t first, std::size_t last);

// How a kernel's step runs its passes over the chunks: `run(passes, fn,
// ctx)` calls fn(ctx, first, last) over disjoint chunk ranges covering the
// plan, on the step's threads, and returns when all are done (the driver's
// threading, reached through a pointer so that no threading code is
// compiled per target). A pass that reduces writes each chunk's sums to
// partials[chunk * partial_sums + j]; the step adds them up in chunk order
// (partial_total, partial_tensor_total in common.inl), so the totals do not
// depend on the thread count.
struct Passes {
  void (*run)(const Passes& self, void (*fn)(void* ctx, std::size_t first, std::size_t last), void* ctx);
  const void* plan;          // the driver's WorkPlan
  std::size_t min_parallel;  // the optimizer's threshold for sharing a pass
  std::size_t chunk_count;
  std::size_t tensor_count;
  double* partials;          // chunk_count * partial_sums doubles, or nullptr when it declares none
  std::size_t partial_sums;
  // tensor_count * partial_sums doubles for partial_totals' per-tensor totals
  // (LAMB's trust ratios), or nullptr when it declares none.
  double* per_tensor;
};

// One step: every pass of the optimizer over the job's chunks, its carried
// values (Kind::carried) written to the report. Most kernels have one pass,
// their chunks() run over the plan (steps.inl); a kernel whose update needs
// a reduction first (Prodigy, LAMB) defines step() itself.
template <class Options>
using StepFn = void (*)(const Options&, const Job&, const Passes&, StepReport& report);

// The pass of an optimizer with a Mode (declaration.hpp) that moves every
// param into the mode `on` (true: the Mode's `on` state) or out of it; the
// job's step and grads are not used. Optimizers without one get a stub that
// is never called (steps.inl).
template <class Options>
using SwitchFn = void (*)(const Options&, bool on, const Job&, const Passes&);

// One step function and one mode switch per declared optimizer (named after
// its options struct, e.g. AdamOptions_kernel, AdamOptions_switch), then the
// two passes every step may use.
#define GRADSTEP_DETAIL_KERNEL_FIELD(O) \
  StepFn<O> O##_kernel;                 \
  SwitchFn<O> O##_switch;
struct KernelTable {
  GRADSTEP_OPTIMIZERS(GRADSTEP_DETAIL_KERNEL_FIELD)
  GradStatsFn grad_stats;
  KernelFn<StreamOptions> stream;
};
#undef GRADSTEP_DETAIL_KERNEL_FIELD

}  // namespace gradstep::detail

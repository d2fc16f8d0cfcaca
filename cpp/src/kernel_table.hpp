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
};

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

// Each entry updates chunks [first, last) of the job.
template <class Options>
using KernelFn = void (*)(const Options&, const Job&, std::size_t first, std::size_t last);

// One kernel per declared optimizer (named after its options struct, e.g.
// AdamOptions_kernel), then the two passes every step may use.
#define GRADSTEP_DETAIL_KERNEL_FIELD(O) KernelFn<O> O##_kernel;
struct KernelTable {
  GRADSTEP_OPTIMIZERS(GRADSTEP_DETAIL_KERNEL_FIELD)
  GradStatsFn grad_stats;
  KernelFn<StreamOptions> stream;
};
#undef GRADSTEP_DETAIL_KERNEL_FIELD

}  // namespace gradstep::detail

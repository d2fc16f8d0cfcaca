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
using Chunk = TensorSet::Chunk;

struct Job {
  const TensorView* tensors;
  const Chunk* chunks;
  std::int64_t step;  // 1-based number of this update
};

// Each entry updates chunks [first, last) of the job.
template <class Options>
using KernelFn = void (*)(const Options&, const Job&, std::size_t first, std::size_t last);

struct KernelTable {
  KernelFn<SgdOptions> sgd;
  KernelFn<AdagradOptions> adagrad;
  KernelFn<AdadeltaOptions> adadelta;
  KernelFn<RmspropOptions> rmsprop;
  KernelFn<AdamOptions> adam;
};

}  // namespace gradstep::detail

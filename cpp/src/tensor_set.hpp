// TensorSet's state, kept out of the installed header (gradstep/optim.hpp
// holds only a pointer to it): the views, the checked byte ranges and the
// work plan are implementation, free to change without touching the API.
#pragma once

#include <cstddef>
#include <vector>

#include "gradstep/optim.hpp"
#include "threading.hpp"

namespace gradstep::detail {

struct Span {
  const char* lo;
  const char* hi;
};

struct TensorSetImpl {
  TensorSetImpl(const TensorView* views, std::size_t count, unsigned mask, const SlotExtents& slot_extents)
      : tensors(views, views + count), plan(views, count), slot_mask(mask), extents(slot_extents) {}

  std::vector<TensorView> tensors;
  std::vector<Span> written;  // sorted, disjoint byte ranges of params and states
  WorkPlan plan;
  unsigned slot_mask;
  SlotExtents extents;  // what each state slot holds (slot_size)
  bool have_grads = false;
  bool half_states = false;  // a tensor's full-size states are bf16/f16

  // For tests (tests/cpp): the state of a set that has not been moved from.
  static const TensorSetImpl& of(const TensorSet& set) { return *set.impl_; }
};

}  // namespace gradstep::detail

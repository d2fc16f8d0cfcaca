#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <vector>

#include "gradstep/declaration.hpp"

namespace gradstep::bindings {
void register_isa(pybind11::module_& m);
void register_options(pybind11::module_& m);
void register_tensor_set(pybind11::module_& m);
void register_schedules(pybind11::module_& m);
void register_torch(pybind11::module_& m);

// A state slot's Extent by the name the spec gives it ("full", "rows", ...).
const char* extent_name(Extent e);

// One step of a _core.TensorSet whose grads the caller checked: their data
// pointers, kept alive by `keep` (PyTensorSet::step_checked).
void step_checked(pybind11::handle tensor_set, std::vector<const void*> ptrs, pybind11::object keep,
                  pybind11::handle options, double rate, std::int64_t step);

// One step_groups of a _core.TensorSet whose grads the caller checked (as
// step_checked): `groups` one options object per param group, group_of[t]
// the group of params[t] (gradstep.torch's package adapters' steady path).
void step_groups_checked(pybind11::handle tensor_set, std::vector<const void*> ptrs, pybind11::object keep,
                         pybind11::handle options, double rate, std::int64_t step, const pybind11::sequence& groups,
                         const std::vector<std::uint32_t>& group_of);

// Whether step_checked would accept these grad pointers: none overlaps a
// buffer the set writes (TensorSet::set_grads' check). The steady path asks
// before stepping any batch, so a grad aliasing a param or state sends the
// step to the plan, which refuses it before any write.
bool grads_acceptable(pybind11::handle tensor_set, const std::vector<const void*>& ptrs);
}  // namespace gradstep::bindings

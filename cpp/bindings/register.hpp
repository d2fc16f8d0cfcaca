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
}  // namespace gradstep::bindings

#pragma once

#include <pybind11/pybind11.h>

namespace gradstep::bindings {
void register_isa(pybind11::module_& m);
void register_options(pybind11::module_& m);
void register_tensor_set(pybind11::module_& m);
void register_schedules(pybind11::module_& m);
}  // namespace gradstep::bindings

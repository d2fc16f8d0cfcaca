// The _core extension: each register_* function binds one part of the C++ core.
#include <pybind11/pybind11.h>

#include "register.hpp"

PYBIND11_MODULE(_core, m) {
  m.doc() = "gradstep C++ core: SIMD optimizer kernels and learning-rate schedules";
  gradstep::bindings::register_isa(m);
  gradstep::bindings::register_options(m);
  gradstep::bindings::register_schedules(m);
  gradstep::bindings::register_tensor_set(m);
  gradstep::bindings::register_torch(m);
}

// Turning Python objects into buffers the core may read or write in place.
#pragma once

#include <pybind11/numpy.h>

#include <string>

#include "gradstep/optim.hpp"

namespace gradstep::bindings {

// A numpy array viewing `obj` without a copy: the array itself, or a view
// through DLPack (torch tensors, jax arrays, ...) or the buffer protocol.
// Raises TypeError naming `what` when no zero-copy view exists.
pybind11::array view_array(pybind11::handle obj, const std::string& what);

// Checks that `a` is a float32/float64, native-endian, aligned, C-contiguous
// array (writeable if `written`), and returns its dtype.
DType check_buffer(const pybind11::array& a, const std::string& what, bool written);

// Checks that `a` has the dtype and shape of `like`.
void check_same_layout(const pybind11::array& a, const pybind11::array& like, const std::string& what,
                       const std::string& like_what);

}  // namespace gradstep::bindings

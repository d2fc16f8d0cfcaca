#include "buffers.hpp"

#include <pybind11/pybind11.h>

#include <sstream>

namespace py = pybind11;

namespace gradstep::bindings {
namespace {

std::string shape_of(const py::array& a) {
  std::ostringstream s;
  s << "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s << (i ? ", " : "") << a.shape(i);
  s << (a.ndim() == 1 ? ",)" : ")");
  return s.str();
}

}  // namespace

py::array view_array(py::handle obj, const std::string& what) {
  if (py::isinstance<py::array>(obj)) return py::reinterpret_borrow<py::array>(obj);
  static const py::module_ numpy = py::module_::import("numpy");
  try {
    if (py::hasattr(obj, "__dlpack__")) return numpy.attr("from_dlpack")(obj);
    if (PyObject_CheckBuffer(obj.ptr())) return numpy.attr("asarray")(obj);
  } catch (py::error_already_set& e) {
    throw py::type_error(what + ": cannot be viewed as a numpy array without copying (" +
                         std::string(e.what()) + ")");
  }
  throw py::type_error(what + ": expected a numpy array or an object numpy can view without "
                       "copying (DLPack or buffer protocol), got " +
                       std::string(py::str(py::type::of(obj).attr("__name__"))));
}

DType check_buffer(const py::array& a, const std::string& what, bool written) {
  DType dtype;
  if (a.dtype().equal(py::dtype::of<float>()))
    dtype = DType::f32;
  else if (a.dtype().equal(py::dtype::of<double>()))
    dtype = DType::f64;
  else
    throw py::type_error(what + ": dtype must be float32 or float64 (native byte order), got " +
                         std::string(py::str(a.dtype())));
  const int flags = a.flags();
  if (!(flags & py::array::c_style))
    throw py::value_error(what + ": must be C-contiguous (a strided view would be updated in a copy)");
  if (!(flags & py::detail::npy_api::NPY_ARRAY_ALIGNED_))
    throw py::value_error(what + ": must be aligned to its element size");
  if (written && !a.writeable()) throw py::value_error(what + ": is read-only but must be updated in place");
  return dtype;
}

void check_same_layout(const py::array& a, const py::array& like, const std::string& what,
                       const std::string& like_what) {
  if (!a.dtype().equal(like.dtype()))
    throw py::type_error(what + ": dtype " + std::string(py::str(a.dtype())) + " differs from " +
                         like_what + "'s " + std::string(py::str(like.dtype())));
  bool same = a.ndim() == like.ndim();
  for (py::ssize_t i = 0; same && i < a.ndim(); ++i) same = a.shape(i) == like.shape(i);
  if (!same)
    throw py::value_error(what + ": shape " + shape_of(a) + " differs from " + like_what + "'s " +
                          shape_of(like));
}

}  // namespace gradstep::bindings

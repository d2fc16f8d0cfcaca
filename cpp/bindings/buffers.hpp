// Turning Python objects into buffers the core may read or write in place.
#pragma once

#include <pybind11/numpy.h>

#include <optional>
#include <string>
#include <vector>

#include "gradstep/optim.hpp"

namespace gradstep::bindings {

// How the core uses a buffer: a written one (param, state) must be the very
// memory of the object given; a read one (grad) only needs the right values.
enum class Use { read, written };

// A numpy array viewing `obj` without a copy: the array itself, or a view
// through DLPack (torch tensors, jax arrays, ...) or the buffer protocol.
// Raises TypeError/ValueError naming `what` when no such view exists or when
// it would mislead: a numpy scalar or anything else numpy would copy, a
// masked array (its mask would be ignored), a torch tensor with a view bit
// (negative, conjugate, ZeroTensor) or requiring grad. For Use::read a
// negative or zero tensor is materialized instead (its values are right).
pybind11::array view_array(pybind11::handle obj, const std::string& what, Use use);

// Checks that `a` is a float32/float64, native-endian, aligned, C-contiguous
// array (writeable if `written`), and returns its dtype.
// The gradstep dtype of a numpy dtype, if it is one (float32, float64,
// float16, ml_dtypes.bfloat16).
std::optional<DType> dtype_of(const pybind11::dtype& d);
DType check_buffer(const pybind11::array& a, const std::string& what, bool written);

// Checks that `a` has the dtype and shape of `like`.
// a's shape is like's (ValueError naming both otherwise).
void check_same_shape(const pybind11::array& a, const pybind11::array& like, const std::string& what,
                      const std::string& like_what);
void check_same_layout(const pybind11::array& a, const pybind11::array& like, const std::string& what,
                       const std::string& like_what);

// A written buffer (param or state) held for the life of a TensorSet, so it
// cannot dangle: it keeps the object given, its numpy view and what owns the
// memory alive; numpy's resize of the owning array is refused while it lives
// (numpy will not resize an array that has a weak reference, even with
// refcheck=False); a torch tensor's storage at construction is kept alive,
// so `t.data = ...` or `t.set_(...)` cannot free the memory the view sees.
// What cannot be prevented (torch's resize_, a dtype or shape reassigned in
// place) is detected at each step by changed(), before anything is written.
class HeldBuffer {
 public:
  // `view` is view_array(obj, ..., Use::written), already checked.
  HeldBuffer(pybind11::handle obj, pybind11::array view);

  const pybind11::array& view() const { return view_; }
  bool has_tensor() const { return static_cast<bool>(tensor_); }

  // Why the buffer may no longer be written (nullptr if it may): a few
  // field reads of the view and of its owning array, no Python code.
  const char* changed_fields() const;
  // The same for the torch tensor behind it (the object given, or the base
  // of a `t.numpy()` view): calls its data_ptr(), numel(), is_contiguous()
  // and reads dtype, which may run Python code. Call before changed_fields.
  const char* changed_tensor() const;

 private:
  pybind11::array view_;
  pybind11::object source_;     // the object given
  pybind11::object owner_ref_;  // weak reference to the owning ndarray: blocks its resize
  PyObject* owner_ = nullptr;   // the last ndarray of view_'s base chain (kept alive by view_)
  void* data_;
  std::vector<pybind11::ssize_t> shape_;
  int type_num_;
  char byteorder_;
  void* owner_data_ = nullptr;
  pybind11::ssize_t owner_nbytes_ = 0;
  // The torch tensor that owns the memory, and what it was at construction.
  pybind11::object tensor_;
  pybind11::object storage_;  // its untyped_storage(): keeps the memory alive
  pybind11::object tensor_dtype_;
  pybind11::object data_ptr_, numel_, is_contiguous_;  // the unbound methods of its class
  std::size_t tensor_ptr_ = 0;
  pybind11::ssize_t tensor_numel_ = 0;
  bool tensor_contiguous_ = false;
};

}  // namespace gradstep::bindings

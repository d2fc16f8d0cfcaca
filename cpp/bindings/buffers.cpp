#include "buffers.hpp"

#include <pybind11/pybind11.h>

#include <cstring>
#include <sstream>

namespace py = pybind11;

namespace gradstep::bindings {
namespace {

using py::detail::npy_api;

std::string shape_of(const py::array& a) {
  std::ostringstream s;
  s << "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s << (i ? ", " : "") << a.shape(i);
  s << (a.ndim() == 1 ? ",)" : ")");
  return s.str();
}

std::string type_name(py::handle obj) { return py::str(py::type::of(obj).attr("__name__")); }

const py::module_& numpy() {
  static const py::module_ np = py::module_::import("numpy");
  return np;
}

bool is_masked_array(py::handle obj) {
  static PyObject* const type = py::object(py::module_::import("numpy.ma").attr("MaskedArray")).release().ptr();
  return PyObject_IsInstance(obj.ptr(), type) == 1;
}

bool is_numpy_scalar(py::handle obj) {
  static PyObject* const type = py::object(numpy().attr("generic")).release().ptr();
  return PyObject_IsInstance(obj.ptr(), type) == 1;
}

// obj.name() is true; false when obj has no such method.
bool flag(py::handle obj, const char* name) {
  if (!py::hasattr(obj, name)) return false;
  return py::bool_(obj.attr(name)());
}

// torch keeps some views as bits on the tensor that DLPack does not carry:
// numpy would read a negative view without its sign and a ZeroTensor from
// memory it does not own. Checked on the object, before any conversion.
py::object resolve_torch_bits(py::object t, const std::string& what, Use use) {
  if (flag(t, "is_conj"))
    throw py::type_error(what + ": is a conjugate view (torch's conj bit set), which numpy would read "
                         "unconjugated; gradstep takes real float32/float64 tensors only");
  const bool neg = flag(t, "is_neg");
  const bool zero = flag(t, "_is_zerotensor");
  const bool requires_grad = py::hasattr(t, "requires_grad") && py::bool_(t.attr("requires_grad"));
  if (use == Use::written) {
    if (neg)
      throw py::type_error(what + ": is a negative view (torch's neg bit set, e.g. torch._neg_view): "
                           "numpy would see it without its sign and it cannot be updated in place; "
                           "pass a tensor without the bit (t.resolve_neg() is a copy)");
    if (zero)
      throw py::type_error(what + ": is a torch ZeroTensor, which has no memory to update in place; "
                           "pass a real tensor (torch.zeros(...))");
    if (requires_grad)
      throw py::type_error(what + ": is a torch tensor that requires grad: DLPack will not export it, so "
                           "it cannot be viewed without copying, and writes behind autograd's back go "
                           "unseen by it; pass t.detach() (it shares the memory) or use gradstep.torch");
    return t;
  }
  // Only read: a copy with the right values is as good as the tensor.
  if (requires_grad) t = t.attr("detach")();
  if (neg) t = t.attr("resolve_neg")();
  if (zero) t = t.attr("clone")();
  return t;
}

// numpy.asarray(obj) for a buffer exporter, checked to be the exporter's own
// memory: numpy may prefer another protocol of the same object, which could
// hand it a copy.
py::array view_buffer(py::handle obj, const std::string& what) {
  Py_buffer buf;
  if (PyObject_GetBuffer(obj.ptr(), &buf, PyBUF_RECORDS_RO) != 0) throw py::error_already_set();
  const void* memory = buf.buf;
  PyBuffer_Release(&buf);
  py::array a = numpy().attr("asarray")(obj);
  if (a.data() != memory && a.size() > 0)
    throw py::type_error(what + ": numpy would copy this " + type_name(obj) +
                         " rather than view its buffer, so it could not be updated in place");
  return a;
}

py::ssize_t nbytes_of(PyObject* array) {
  const auto* a = py::detail::array_proxy(array);
  py::ssize_t n = py::reinterpret_borrow<py::dtype>(a->descr).itemsize();
  for (int i = 0; i < a->nd; ++i) n *= a->dimensions[i];
  return n;
}

bool is_tensor_like(py::handle obj) {
  return py::hasattr(obj, "data_ptr") && py::hasattr(obj, "untyped_storage") && py::hasattr(obj, "numel");
}

PyObject* interned(const char* s) { return PyUnicode_InternFromString(s); }


// A torch.Tensor (or subclass), once torch is imported: found by type, not by
// attribute lookups, since grads come this way at every step.
bool is_torch_tensor(py::handle obj) {
  static PyObject* tensor_type = nullptr;
  if (tensor_type == nullptr) {
    PyObject* torch = PyImport_GetModule(py::str("torch").ptr());  // new reference or null
    if (torch == nullptr) {
      PyErr_Clear();
      return false;
    }
    tensor_type = PyObject_GetAttrString(torch, "Tensor");  // kept for the process' life
    Py_DECREF(torch);
    if (tensor_type == nullptr) {
      PyErr_Clear();
      return false;
    }
  }
  return PyObject_IsInstance(obj.ptr(), tensor_type) == 1;
}

[[noreturn]] void no_view(const std::string& what, py::error_already_set& e) {
  throw py::type_error(what + ": cannot be viewed as a numpy array without copying (" +
                       std::string(e.what()) + ")");
}

// A torch tensor through numpy(): it shares the memory, refuses what numpy
// would misread (neg, conj and zero bits, requires_grad), is several times
// cheaper than DLPack, and makes the storage not resizable, so a resize_
// raises instead of freeing the memory under the view.
// t.numpy(), also for bfloat16, which torch cannot hand to numpy: its bits
// viewed as int16 (the same memory), then as ml_dtypes.bfloat16.
py::array numpy_of(const py::object& t) {
  // torch is imported (t is a tensor); its dtypes live as long as it does.
  static const py::handle bfloat16 = py::object(py::module_::import("torch").attr("bfloat16")).release();
  if (!py::object(t.attr("dtype")).is(bfloat16)) return t.attr("numpy")();
  static const py::handle int16 = py::object(py::module_::import("torch").attr("int16")).release();
  py::array bits = t.attr("view")(int16).attr("numpy")();
  return bits.attr("view")(py::module_::import("ml_dtypes").attr("bfloat16"));
}

py::array view_tensor(py::handle obj, const std::string& what, Use use) {
  py::object t = py::reinterpret_borrow<py::object>(obj);
  if (use == Use::written) {
    t = resolve_torch_bits(t, what, use);  // raises for every bit
    py::array a;
    try {
      a = numpy_of(t.attr("detach")());
    } catch (py::error_already_set& e) {
      no_view(what, e);
    }
    if (a.size() > 0 && reinterpret_cast<std::size_t>(a.data()) != t.attr("data_ptr")().cast<std::size_t>())
      throw py::type_error(what + ": its numpy view is not its memory; it cannot be updated in place");
    return a;
  }
  try {
    return numpy_of(t);
  } catch (py::error_already_set& e) {
    if (!e.matches(PyExc_RuntimeError) && !e.matches(PyExc_TypeError)) throw;
  }
  // Only read: a copy with the right values (resolved bits) is as good.
  t = resolve_torch_bits(t, what, use);
  try {
    return numpy_of(t);
  } catch (py::error_already_set& e) {
    no_view(what, e);
  }
}

}  // namespace

py::array view_array(py::handle obj, const std::string& what, Use use) {
  const auto& api = npy_api::get();
  if (api.PyArray_Check_(obj.ptr())) {
    if (Py_TYPE(obj.ptr()) != reinterpret_cast<PyTypeObject*>(api.PyArray_Type_) && is_masked_array(obj))
      throw py::type_error(what + ": is a masked array, whose mask would be ignored (masked elements " +
                           "read and updated like the others); pass its .data" +
                           (use == Use::read ? " or .filled(0)" : ""));
    return py::reinterpret_borrow<py::array>(obj);
  }
  if (is_numpy_scalar(obj)) {
    if (use == Use::written)
      throw py::type_error(what + ": is a numpy scalar (" + type_name(obj) + "), which is immutable: it " +
                           "would be copied and only the copy updated; pass a 0-d array " +
                           "(np.array(x)) and keep using that array");
    return numpy().attr("asarray")(obj);
  }
  if (is_torch_tensor(obj)) return view_tensor(obj, what, use);
  py::object src = py::reinterpret_borrow<py::object>(obj);
  try {
    if (py::hasattr(src, "__dlpack__")) {
      // copy=False: a producer that can only export a copy must refuse.
      if (use == Use::written) return numpy().attr("from_dlpack")(src, py::arg("copy") = false);
      return numpy().attr("from_dlpack")(src);
    }
    if (PyObject_CheckBuffer(src.ptr())) return view_buffer(src, what);
  } catch (py::error_already_set& e) {
    // Anything else (a RuntimeError from a callback, KeyboardInterrupt) is
    // not about the conversion: let it through as it is.
    if (!e.matches(PyExc_TypeError) && !e.matches(PyExc_ValueError) && !e.matches(PyExc_BufferError))
      throw;
    throw py::type_error(what + ": cannot be viewed as a numpy array without copying (" +
                         std::string(e.what()) + ")");
  }
  throw py::type_error(what + ": expected a numpy array or an object numpy can view without "
                       "copying (DLPack or buffer protocol), got " + type_name(obj) +
                       (use == Use::written ? " (a copy of it would be updated, not it)" : ""));
}

std::optional<DType> dtype_of(const py::dtype& d) {
  if (d.equal(py::dtype::of<float>())) return DType::f32;
  if (d.equal(py::dtype::of<double>())) return DType::f64;
  if (d.equal(py::dtype("float16"))) return DType::f16;
  // ml_dtypes.bfloat16 (JAX's, numpy's usual bfloat16): a dtype registered
  // at run time, so known by its name and size.
  if (d.itemsize() == 2 && std::string(py::str(d.attr("name"))) == "bfloat16") return DType::bf16;
  return std::nullopt;
}

DType check_buffer(const py::array& a, const std::string& what, bool written) {
  const std::optional<DType> known = dtype_of(a.dtype());
  if (!known)
    throw py::type_error(what + ": dtype must be float32, float64, float16 or bfloat16 (ml_dtypes; native "
                         "byte order), got " + std::string(py::str(a.dtype())));
  const DType dtype = *known;
  const int flags = a.flags();
  if (!(flags & py::array::c_style))
    throw py::value_error(what + ": must be C-contiguous (a strided view would be updated in a copy)");
  if (!(flags & npy_api::NPY_ARRAY_ALIGNED_))
    throw py::value_error(what + ": must be aligned to its element size");
  if (written && !a.writeable()) throw py::value_error(what + ": is read-only but must be updated in place");
  return dtype;
}

void check_same_layout(const py::array& a, const py::array& like, const std::string& what,
                       const std::string& like_what) {
  if (!a.dtype().equal(like.dtype()))
    throw py::type_error(what + ": dtype " + std::string(py::str(a.dtype())) + " differs from " +
                         like_what + "'s " + std::string(py::str(like.dtype())));
  check_same_shape(a, like, what, like_what);
}

void check_same_shape(const py::array& a, const py::array& like, const std::string& what,
                      const std::string& like_what) {
  bool same = a.ndim() == like.ndim();
  for (py::ssize_t i = 0; same && i < a.ndim(); ++i) same = a.shape(i) == like.shape(i);
  if (!same)
    throw py::value_error(what + ": shape " + shape_of(a) + " differs from " + like_what + "'s " +
                          shape_of(like));
}

HeldBuffer::HeldBuffer(py::handle obj, py::array view)
    : view_(std::move(view)), source_(py::reinterpret_borrow<py::object>(obj)) {
  const auto& api = npy_api::get();
  const auto* a = py::detail::array_proxy(view_.ptr());
  data_ = a->data;
  shape_.assign(a->dimensions, a->dimensions + a->nd);
  const auto* d = py::detail::array_descriptor_proxy(a->descr);
  type_num_ = d->type_num;
  byteorder_ = d->byteorder;
  // numpy points a view's base at the array owning the memory (or at the
  // non-array exporter); follow the arrays to the last one.
  PyObject* owner = view_.ptr();
  while (py::detail::array_proxy(owner)->base != nullptr &&
         api.PyArray_Check_(py::detail::array_proxy(owner)->base))
    owner = py::detail::array_proxy(owner)->base;
  owner_ = owner;
  owner_data_ = py::detail::array_proxy(owner)->data;
  owner_nbytes_ = nbytes_of(owner);
  PyObject* exporter = py::detail::array_proxy(owner)->base;
  if (exporter == nullptr) {
    // Only an array without a base can be resized; a weak reference makes
    // numpy refuse (a buffer exporter refuses by itself while viewed).
    PyObject* ref = PyWeakref_NewRef(owner, nullptr);
    if (ref == nullptr)
      PyErr_Clear();  // not weakly referenceable: changed_fields still detects a resize
    else
      owner_ref_ = py::reinterpret_steal<py::object>(ref);
  }
  py::handle tensor = api.PyArray_Check_(obj.ptr()) ? py::handle(exporter) : obj;
  if (tensor && is_tensor_like(tensor)) {
    tensor_ = py::reinterpret_borrow<py::object>(tensor);
    // The methods of its class, called unbound at each step (no lookup).
    data_ptr_ = py::type::of(tensor_).attr("data_ptr");
    numel_ = py::type::of(tensor_).attr("numel");
    is_contiguous_ = py::type::of(tensor_).attr("is_contiguous");
    storage_ = tensor_.attr("untyped_storage")();
    tensor_dtype_ = tensor_.attr("dtype");
    tensor_ptr_ = tensor_.attr("data_ptr")().cast<std::size_t>();
    tensor_numel_ = tensor_.attr("numel")().cast<py::ssize_t>();
    tensor_contiguous_ = py::bool_(tensor_.attr("is_contiguous")());
  }
}

const char* HeldBuffer::changed_fields() const {
  const auto* a = py::detail::array_proxy(view_.ptr());
  if (a->data != data_) return "its memory was reallocated (resized)";
  if (a->nd != static_cast<int>(shape_.size()) ||
      (a->nd > 0 && std::memcmp(a->dimensions, shape_.data(), sizeof(py::ssize_t) * shape_.size()) != 0))
    return "its shape changed";
  const auto* d = py::detail::array_descriptor_proxy(a->descr);
  if (d->type_num != type_num_ || d->byteorder != byteorder_) return "its dtype changed";
  constexpr int kLayout = npy_api::NPY_ARRAY_C_CONTIGUOUS_ | npy_api::NPY_ARRAY_ALIGNED_;
  if ((a->flags & kLayout) != kLayout) return "it is no longer C-contiguous and aligned";
  if (!(a->flags & npy_api::NPY_ARRAY_WRITEABLE_)) return "it was made read-only";
  if (owner_ != view_.ptr() &&
      (py::detail::array_proxy(owner_)->data != owner_data_ || nbytes_of(owner_) != owner_nbytes_))
    return "the array owning its memory was resized";
  return nullptr;
}

const char* HeldBuffer::changed_tensor() const {
  static PyObject* const dtype = interned("dtype");
  // The same data pointer and size: the memory the view sees is the
  // tensor's (the old storage is kept alive, so no other can reuse its
  // address); the same dtype and contiguity: it means the same elements.
  PyObject* self[] = {tensor_.ptr()};
  auto call = [&](const py::object& fn) {
    PyObject* r = PyObject_Vectorcall(fn.ptr(), self, 1, nullptr);
    if (r == nullptr) throw py::error_already_set();
    return py::reinterpret_steal<py::object>(r);
  };
  if (PyLong_AsSize_t(call(data_ptr_).ptr()) != tensor_ptr_ ||
      PyLong_AsSsize_t(call(numel_).ptr()) != tensor_numel_) {
    PyErr_Clear();
    return "its storage was replaced or resized (t.data = ..., set_, resize_)";
  }
  py::object dt = py::reinterpret_steal<py::object>(PyObject_GetAttr(tensor_.ptr(), dtype));
  if (!dt) throw py::error_already_set();
  if (!dt.is(tensor_dtype_)) return "its dtype changed";
  if ((call(is_contiguous_).ptr() == Py_True) != tensor_contiguous_) return "its layout changed (contiguity)";
  return nullptr;
}

}  // namespace gradstep::bindings

// gradstep.torch's steady state: a param group stepped again with nothing
// changed but the values of its grads costs one C++ pass over its tensors.
//
// gradstep.torch plans a step in Python (checks every param, grad and state
// buffer, makes missing states, builds the C++ TensorSets), which costs
// microseconds per parameter. After such a step it records here what it
// saw: the group's params, which of them had grads, the torch tensors of
// their states (and of torch's state["step"]), their data pointers and
// sizes. A TorchGroup then checks, at each later step, that all of it is
// still so (identity of every object, data pointer, size, dtype and
// contiguity of every tensor, the step counts' values) and that each new
// grad is a plain dense CPU tensor of its param's dtype and shape; if
// anything differs the Python plan runs instead (and records anew). Only
// then are the grads' data pointers handed to the TensorSets, and torch's
// step counters incremented in their memory. The check calls only C
// methods of torch's tensor types (the params' exact types are checked
// first), so no Python code runs between the check and the writes.
#include <pybind11/stl.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "register.hpp"

namespace py = pybind11;

namespace gradstep::bindings {
namespace {

PyObject* intern(const char* s) {
  PyObject* o = PyUnicode_InternFromString(s);
  if (o == nullptr) throw py::error_already_set();
  return o;  // immortal enough: one reference kept for the life of the process
}

// torch's tensor API as the check uses it, looked up once from the module.
struct TorchApi {
  PyTypeObject* tensor_type;
  py::object data_ptr, numel, is_contiguous, is_neg;  // unbound methods of torch.Tensor
  PyObject* grad = intern("grad");
  PyObject* dtype = intern("dtype");
  PyObject* shape = intern("shape");
  PyObject* step = intern("step");

  explicit TorchApi(py::handle torch) {
    py::object tensor = torch.attr("Tensor");
    tensor_type = reinterpret_cast<PyTypeObject*>(tensor.ptr());
    data_ptr = tensor.attr("data_ptr");
    numel = tensor.attr("numel");
    is_contiguous = tensor.attr("is_contiguous");
    is_neg = tensor.attr("is_neg");
  }
};

// A failed call or attribute read means "not the steady state": the Python
// plan runs and reports the problem properly.
struct NotSteady {};

py::object call(const py::object& method, PyObject* self) {
  PyObject* args[] = {self};
  PyObject* r = PyObject_Vectorcall(method.ptr(), args, 1, nullptr);
  if (r == nullptr) {
    PyErr_Clear();
    throw NotSteady{};
  }
  return py::reinterpret_steal<py::object>(r);
}

py::object attr(PyObject* obj, PyObject* name) {
  PyObject* r = PyObject_GetAttr(obj, name);
  if (r == nullptr) {
    PyErr_Clear();
    throw NotSteady{};
  }
  return py::reinterpret_steal<py::object>(r);
}

std::size_t as_size(const py::object& o) {
  const std::size_t v = PyLong_AsSize_t(o.ptr());
  if (v == static_cast<std::size_t>(-1) && PyErr_Occurred()) {
    PyErr_Clear();
    throw NotSteady{};
  }
  return v;
}

// A torch tensor as recorded: the object, and the memory it viewed.
struct Watched {
  py::object tensor;
  py::object dtype;
  std::size_t ptr = 0;
  std::size_t numel = 0;

  static Watched of(const TorchApi& api, py::handle t) {
    Watched w;
    w.tensor = py::reinterpret_borrow<py::object>(t);
    w.dtype = attr(t.ptr(), api.dtype);
    w.ptr = as_size(call(api.data_ptr, t.ptr()));
    w.numel = as_size(call(api.numel, t.ptr()));
    if (call(api.is_contiguous, t.ptr()).ptr() != Py_True) throw NotSteady{};
    return w;
  }
  // Still the same memory, meaning the same elements: `t.data = ...`,
  // set_, as_strided_ and a dtype view all change one of these. (A param's
  // check: params are what user code reassigns.)
  bool same(const TorchApi& api) const {
    PyObject* t = tensor.ptr();
    return as_size(call(api.data_ptr, t)) == ptr && as_size(call(api.numel, t)) == numel &&
           attr(t, api.dtype).is(dtype) && call(api.is_contiguous, t).ptr() == Py_True;
  }
  // Still at the same address (a state buffer's check, with its identity in
  // the state dict): replacing the tensor in the dict, `t.data = other` and
  // set_ are seen. What is not seen is `t.data` made a different view of
  // the very same first element (a transpose, a prefix, a dtype view): the
  // step then updates the memory the buffer was made with, still alive and
  // of the recorded size (the TensorSet keeps its storage), so nothing is
  // written out of bounds; torch's own step would fail on such a state.
  bool same_address(const TorchApi& api) const { return as_size(call(api.data_ptr, tensor.ptr())) == ptr; }
};

// One param with a grad in the recorded step.
struct Member {
  Watched param;
  py::object size;   // param.shape: what the grad's shape must equal
  py::object inner;  // state[param] (the dict object), or null for a stateless optimizer
  std::vector<py::object> names;  // the state names watched (interned str)
  std::vector<Watched> states;    // inner[name] for each of names
  // torch's state["step"]: a 0-d float32/float64 tensor, and its storage,
  // kept so the memory at step_ptr stays valid whatever happens to it.
  py::object step_tensor, step_storage;
  void* step_ptr = nullptr;
  bool step_double = false;
};

struct Batch {
  py::object tensor_set;
  std::vector<std::size_t> members;  // indices into TorchGroup::members_
  std::int64_t k = 1;                // the 1-based number of its next update
};

double read_step(const Member& m) {
  return m.step_double ? *static_cast<const double*>(m.step_ptr)
                       : static_cast<double>(*static_cast<const float*>(m.step_ptr));
}

class TorchGroup {
 public:
  // params: the group's params; state: the optimizer's state; batches: (TensorSet, indices
  // of the params it steps, k of its next update); names: the state buffers each param has
  // (torch's names); has_step: torch keeps state["step"]; param_types: the exact classes a
  // param may have. Raises ValueError if the group cannot take the steady path (a tensor
  // that is not contiguous, an unexpected type, ...): then the Python plan keeps running.
  // sizes, if not None: per param of the group, None or the (name, numel) of each state
  // buffer that member has (states not the param's size: Adafactor's row_var; Prodigy's
  // s; names absent for a param without that buffer), in place of names at the param's numel;
  // or (name, numel, dtype) for a buffer not of the param's dtype (a bfloat16 param's float32
  // states and master copy).
  TorchGroup(py::handle torch, const py::sequence& params, const py::dict& state, const py::list& batches,
             const std::vector<std::string>& names, bool has_step, const py::tuple& param_types,
             const py::object& sizes)
      : api_(torch), has_step_(has_step) {
    try {
      build(params, state, batches, names, param_types, sizes);
    } catch (NotSteady&) {
      throw py::value_error("the group's tensors cannot be stepped on the steady path");
    }
  }

  // Each batch's k of its next update, or None once the record is void.
  py::object steps() const {
    if (!valid_) return py::none();
    py::list out(batches_.size());
    for (std::size_t b = 0; b < batches_.size(); ++b) out[b] = py::int_(batches_[b].k);
    return std::move(out);
  }

  // check() then step() for a group stepped alone: false, having written nothing, if the
  // group is not as recorded.
  bool run(py::handle params, py::handle state, const py::sequence& options) {
    if (!check(params, state)) return false;
    step(options);
    return true;
  }

  // Whether the group is still as recorded; if so, its grads are taken for step().
  bool check(py::handle params, py::handle state) {
    pending_ptrs_.clear();
    pending_keep_ = py::object();
    try {
      return check_all(params, state);
    } catch (NotSteady&) {
      pending_ptrs_.clear();
      pending_keep_ = py::object();
      return false;
    }
  }

  // Steps every batch with the grads check() took: options[b] is batch b's
  // options for its update k (the rate in options.lr), validated by the
  // caller against the state buffers recorded, so no batch's step can fail
  // after another's was written. Then increments torch's step counters; if
  // their values no longer agree within a batch (two params sharing one
  // step tensor), the record is void and the next step is planned.
  void step(const py::sequence& options) {
    if (pending_ptrs_.size() != batches_.size())
      throw std::logic_error("TorchGroup.step without a successful check()");
    if (static_cast<std::size_t>(options.size()) != batches_.size())
      throw py::value_error("options: one per batch");
    std::vector<std::vector<const void*>> ptrs = std::move(pending_ptrs_);
    py::object keep = std::move(pending_keep_);
    pending_ptrs_.clear();
    for (std::size_t b = 0; b < batches_.size(); ++b) {
      py::object o = options[b];
      step_checked(batches_[b].tensor_set, std::move(ptrs[b]), keep, o, o.attr("lr").cast<double>(),
                   batches_[b].k);
    }
    for (Batch& b : batches_) {
      if (!has_step_) continue;  // SGD's k is 2 once its momentum buffers exist, as recorded
      for (std::size_t i : b.members) {
        Member& m = members_[i];
        if (m.step_double)
          *static_cast<double*>(m.step_ptr) += 1.0;
        else
          *static_cast<float*>(m.step_ptr) += 1.0f;
      }
      b.k = next_k(b);
    }
  }

  // For a record of one batch whose set spans param groups (gradstep.torch's
  // package adapters): the step check() took the grads for, at `rate`, with
  // the set's `options`, and, if groups is not None, step_groups' per-group
  // options. No step counters are written (has_step is false for these).
  void step_set(py::handle options, double rate, std::int64_t k, const py::object& groups,
                const std::vector<std::uint32_t>& group_of) {
    if (pending_ptrs_.size() != 1 || batches_.size() != 1)
      throw std::logic_error("TorchGroup.step_set without a successful check() of one batch");
    std::vector<const void*> ptrs = std::move(pending_ptrs_[0]);
    py::object keep = std::move(pending_keep_);
    pending_ptrs_.clear();
    if (groups.is_none())
      step_checked(batches_[0].tensor_set, std::move(ptrs), keep, options, rate, k);
    else
      step_groups_checked(batches_[0].tensor_set, std::move(ptrs), keep, options, rate, k,
                          py::reinterpret_borrow<py::sequence>(groups), group_of);
  }

  bool valid() const { return valid_; }

 private:
  void build(const py::sequence& params, const py::dict& state, const py::list& batches,
             const std::vector<std::string>& names, const py::tuple& param_types, const py::object& sizes) {
    const std::size_t n = params.size();
    for (std::size_t i = 0; i < n; ++i) params_.push_back(params[i]);
    for (const std::string& name : names) names_.push_back(py::reinterpret_borrow<py::object>(intern(name.c_str())));
    member_of_.assign(n, -1);
    for (py::handle item : batches) {
      py::tuple t = py::reinterpret_borrow<py::tuple>(item);
      Batch b;
      b.tensor_set = t[0];
      b.k = t[2].cast<std::int64_t>();
      for (py::handle index : t[1]) {
        const std::size_t i = index.cast<std::size_t>();
        if (i >= n || member_of_[i] >= 0) throw py::value_error("batches: bad param index");
        member_of_[i] = static_cast<std::ptrdiff_t>(members_.size());
        b.members.push_back(members_.size());
        if (sizes.is_none()) {
          members_.push_back(member(params_[i], state, param_types, names_, nullptr));
        } else {
          py::object own = py::reinterpret_borrow<py::sequence>(sizes)[i];
          if (own.is_none()) throw NotSteady{};
          std::vector<py::object> own_names;
          std::vector<std::size_t> numels;
          std::vector<py::object> dtypes;  // None: the param's
          for (py::handle pair : own) {
            py::tuple t = py::reinterpret_borrow<py::tuple>(pair);
            own_names.push_back(py::reinterpret_borrow<py::object>(intern(t[0].cast<std::string>().c_str())));
            numels.push_back(t[1].cast<std::size_t>());
            dtypes.push_back(t.size() > 2 ? py::reinterpret_borrow<py::object>(t[2]) : py::none());
          }
          members_.push_back(member(params_[i], state, param_types, own_names, &numels, &dtypes));
        }
      }
      batches_.push_back(std::move(b));
    }
    for (Batch& b : batches_)
      if (has_step_ && next_k(b) != b.k) throw NotSteady{};
  }

  Member member(py::handle p, const py::dict& state, const py::tuple& param_types,
                const std::vector<py::object>& names, const std::vector<std::size_t>* numels,
                const std::vector<py::object>* dtypes = nullptr) {
    bool known = false;
    for (py::handle type : param_types) known = known || Py_TYPE(p.ptr()) == reinterpret_cast<PyTypeObject*>(type.ptr());
    if (!known) throw NotSteady{};
    Member m;
    m.param = Watched::of(api_, p);
    m.size = attr(p.ptr(), api_.shape);
    m.names = names;
    if (names.empty() && !has_step_) return m;
    PyObject* inner = PyDict_GetItemWithError(state.ptr(), p.ptr());
    if (inner == nullptr || !PyDict_CheckExact(inner)) {
      PyErr_Clear();
      throw NotSteady{};
    }
    m.inner = py::reinterpret_borrow<py::object>(inner);
    inner_of_[p.ptr()] = inner;
    for (std::size_t s = 0; s < names.size(); ++s) {
      PyObject* t = PyDict_GetItemWithError(inner, names[s].ptr());
      if (t == nullptr || Py_TYPE(t) != api_.tensor_type) {
        PyErr_Clear();
        throw NotSteady{};
      }
      m.states.push_back(Watched::of(api_, t));
      const std::size_t expected = numels ? (*numels)[s] : m.param.numel;
      const py::object& dtype = dtypes && !(*dtypes)[s].is_none() ? (*dtypes)[s] : m.param.dtype;
      if (!m.states.back().dtype.is(dtype) || m.states.back().numel != expected) throw NotSteady{};
    }
    if (has_step_) {
      PyObject* t = PyDict_GetItemWithError(inner, api_.step);
      if (t == nullptr || Py_TYPE(t) != api_.tensor_type) {
        PyErr_Clear();
        throw NotSteady{};
      }
      Watched w = Watched::of(api_, t);
      const std::string dtype = py::str(w.dtype);
      if (w.numel != 1 || (dtype != "torch.float32" && dtype != "torch.float64")) throw NotSteady{};
      m.step_tensor = w.tensor;
      m.step_storage = w.tensor.attr("untyped_storage")();
      m.step_ptr = reinterpret_cast<void*>(w.ptr);
      m.step_double = dtype == "torch.float64";
    }
    return m;
  }

  // The k of a batch's next update from its params' step counts (as torch
  // reads them: the count + 1), all of which must agree.
  std::int64_t next_k(const Batch& b) {
    const double count = read_step(members_[b.members.front()]);
    for (std::size_t i : b.members)
      if (read_step(members_[i]) != count) {
        valid_ = false;
        return 0;
      }
    if (!(count >= 0.0 && count < 9.0e18)) {
      valid_ = false;
      return 0;
    }
    return static_cast<std::int64_t>(count) + 1;
  }

  bool check_all(py::handle params, py::handle state) {
    if (!valid_) return false;
    PyObject* list = params.ptr();
    if (!PyList_Check(list) || static_cast<std::size_t>(PyList_GET_SIZE(list)) != params_.size()) return false;
    for (std::size_t i = 0; i < params_.size(); ++i)
      if (PyList_GET_ITEM(list, i) != params_[i].ptr()) return false;
    if (!same_state_dicts(state.ptr())) return false;
    std::vector<std::vector<const void*>> ptrs(batches_.size());
    py::tuple keep(members_.size());
    std::size_t kept = 0;
    for (std::size_t b = 0; b < batches_.size(); ++b) {
      const Batch& batch = batches_[b];
      ptrs[b].reserve(batch.members.size());
      for (std::size_t i : batch.members) {
        const Member& m = members_[i];
        py::object g = grad_of(m);
        if (!g) return false;
        const std::size_t data = as_size(call(api_.data_ptr, g.ptr()));
        if (data == 0 && m.param.numel != 0) return false;  // a meta or zero tensor: no memory
        ptrs[b].push_back(reinterpret_cast<const void*>(data));
        PyTuple_SET_ITEM(keep.ptr(), kept++, g.release().ptr());
        if (!unchanged(m)) return false;
        if (has_step_ && read_step(m) != static_cast<double>(batch.k - 1)) return false;
      }
      if (!grads_acceptable(batch.tensor_set, ptrs[b])) return false;  // e.g. a grad aliasing a param
    }
    // Params without a grad in the recorded step must still have none (torch skips them).
    for (std::size_t i = 0; i < params_.size(); ++i)
      if (member_of_[i] < 0 && attr(params_[i].ptr(), api_.grad).ptr() != Py_None) return false;
    pending_ptrs_ = std::move(ptrs);
    pending_keep_ = std::move(keep);
    return true;
  }

  // m's grad if it is a plain dense CPU tensor of the param's dtype and shape, else null.
  py::object grad_of(const Member& m) {
    py::object g = attr(m.param.tensor.ptr(), api_.grad);
    PyObject* t = g.ptr();
    if (Py_TYPE(t) != api_.tensor_type) return py::object();  // None, or a subclass: the plan decides
    // Contiguous rules out the sparse layouts (they report False); a meta or
    // zero tensor has no data pointer (checked by the caller); a negative
    // view would be read with the wrong sign. (This torch has CPU tensors only.)
    if (!attr(t, api_.dtype).is(m.param.dtype) || call(api_.is_contiguous, t).ptr() != Py_True ||
        call(api_.is_neg, t).ptr() != Py_False)
      return py::object();
    const int same = PyObject_RichCompareBool(attr(t, api_.shape).ptr(), m.size.ptr(), Py_EQ);
    if (same < 0) PyErr_Clear();
    if (same != 1) return py::object();
    return g;
  }

  // m's param views the recorded memory, and its state dict holds the recorded buffers.
  bool unchanged(const Member& m) {
    if (!m.param.same(api_)) return false;
    if (!m.inner) return true;
    PyObject* inner = m.inner.ptr();  // still state[param]: same_state_dicts
    for (std::size_t s = 0; s < m.names.size(); ++s) {
      // The names are interned str with their hash cached: no Python code runs.
      if (PyDict_GetItemWithError(inner, m.names[s].ptr()) != m.states[s].tensor.ptr()) {
        PyErr_Clear();
        return false;
      }
      if (!m.states[s].same_address(api_)) return false;
    }
    if (has_step_) {
      if (PyDict_GetItemWithError(inner, api_.step) != m.step_tensor.ptr()) {
        PyErr_Clear();
        return false;
      }
      // Its memory, read and written by the step, is kept alive by step_storage.
      if (as_size(call(api_.data_ptr, m.step_tensor.ptr())) != reinterpret_cast<std::size_t>(m.step_ptr))
        return false;
    }
    return true;
  }

  // state[p] is still the recorded dict for every member with state. Read by
  // walking the dict: looking each param up would call torch.Tensor.__hash__,
  // a Python function, per param.
  bool same_state_dicts(PyObject* state) {
    if (inner_of_.empty()) return true;
    if (!PyDict_Check(state)) return false;
    Py_ssize_t pos = 0, found = 0;
    PyObject *key, *value;
    while (PyDict_Next(state, &pos, &key, &value)) {
      const auto it = inner_of_.find(key);
      if (it == inner_of_.end()) continue;  // another group's param
      if (it->second != value) return false;
      ++found;
    }
    return found == static_cast<Py_ssize_t>(inner_of_.size());
  }

  TorchApi api_;
  bool has_step_;
  bool valid_ = true;
  std::vector<py::object> params_;
  std::vector<py::object> names_;
  std::vector<std::ptrdiff_t> member_of_;  // per param: its index in members_, or -1 (no grad)
  std::vector<Member> members_;
  std::unordered_map<PyObject*, PyObject*> inner_of_;  // member param -> its state dict
  std::vector<Batch> batches_;
  std::vector<std::vector<const void*>> pending_ptrs_;  // per batch, taken by check()
  py::object pending_keep_;
};

}  // namespace

void register_torch(py::module_& m) {
  py::class_<TorchGroup>(m, "_TorchGroup",
                         "gradstep.torch's record of a param group's last step: checks that nothing but the "
                         "grads' values changed, then steps it (see register_torch.cpp).")
      .def(py::init<py::handle, const py::sequence&, const py::dict&, const py::list&,
                    const std::vector<std::string>&, bool, const py::tuple&, const py::object&>(),
           py::arg("torch"), py::arg("params"), py::arg("state"), py::arg("batches"), py::arg("names"),
           py::arg("has_step"), py::arg("param_types"), py::arg("sizes") = py::none())
      .def_property_readonly("steps", &TorchGroup::steps,
                             "Each batch's k (1-based) of its next update; None once the record is void.")
      .def_property_readonly("valid", &TorchGroup::valid)
      .def("run", &TorchGroup::run, "check() and, if it holds, step(): for a group stepped alone.")
      .def("check", &TorchGroup::check, "Whether the group is as recorded (takes its grads if so).")
      .def("step", &TorchGroup::step, "Step the grads check() took with options per batch.")
      .def("step_set", &TorchGroup::step_set, py::arg("options"), py::arg("rate"), py::arg("k"), py::arg("groups"),
           py::arg("group_of"), "Step the one batch's set with the grads check() took (package adapters).");
}

}  // namespace gradstep::bindings

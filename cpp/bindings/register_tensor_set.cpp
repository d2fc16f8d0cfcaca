// TensorSet: the params and states of one optimizer, checked once and kept
// alive here; each step checks only the new grads, then runs without the GIL.
#include <pybind11/stl.h>

#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "buffers.hpp"
#include "gradstep/optim.hpp"
#include "gradstep/schedule.hpp"
#include "register.hpp"

namespace py = pybind11;

namespace gradstep::bindings {
namespace {

std::string indexed(const std::string& name, std::size_t i) {
  return name + "[" + std::to_string(i) + "]";
}

// What a grad must look like to be read as its param's gradient: the param's
// type number and shape. Checked per step by reading the ndarray's fields.
struct Layout {
  int type_num;
  std::vector<py::ssize_t> shape;
};

Layout layout_of(const py::array& a) {
  return {py::detail::array_descriptor_proxy(py::detail::array_proxy(a.ptr())->descr)->type_num,
          std::vector<py::ssize_t>(a.shape(), a.shape() + a.ndim())};
}

// The per-step grad check on the fast path, a handful of field reads: an
// ndarray (or subclass) of the param's dtype in native byte order, aligned,
// C-contiguous, of the param's shape. Returns its data, or nullptr when any
// of that fails (the caller then runs the full check for the error message).
const void* fast_grad_data(PyObject* obj, const Layout& like) {
  // Exactly an ndarray: a subclass (a masked array's mask would be ignored)
  // takes the full check.
  const auto& api = py::detail::npy_api::get();
  if (Py_TYPE(obj) != reinterpret_cast<PyTypeObject*>(api.PyArray_Type_)) return nullptr;
  const auto* a = py::detail::array_proxy(obj);
  const auto* d = py::detail::array_descriptor_proxy(a->descr);
  constexpr int kNeeded = py::detail::npy_api::NPY_ARRAY_C_CONTIGUOUS_ |
                          py::detail::npy_api::NPY_ARRAY_ALIGNED_;
  // numpy spells the native byte order '=' for every dtype it can be.
  if (d->type_num != like.type_num || d->byteorder != '=' || (a->flags & kNeeded) != kNeeded ||
      a->nd != static_cast<int>(like.shape.size()))
    return nullptr;
  if (a->nd > 0 &&
      std::memcmp(a->dimensions, like.shape.data(), sizeof(py::ssize_t) * like.shape.size()) != 0)
    return nullptr;
  return a->data;
}

// The sets being stepped on this thread, innermost last. Converting a grad
// can run Python code (__dlpack__, a buffer export, a finalizer) that steps
// again; another set is fine, the same one is refused: its outer step has
// not run yet, so the inner one would use the same step number.
class Stepping {
 public:
  explicit Stepping(const void* set) {
    for (const void* s : active())
      if (s == set)
        throw std::runtime_error("TensorSet.step re-entered: a callback run while converting grads "
                                 "(e.g. a __dlpack__) stepped the same optimizer again; steps of one "
                                 "optimizer cannot nest");
    active().push_back(set);
  }
  ~Stepping() { active().pop_back(); }
  Stepping(const Stepping&) = delete;
  Stepping& operator=(const Stepping&) = delete;

 private:
  static std::vector<const void*>& active() {
    thread_local std::vector<const void*> sets;
    return sets;
  }
};

// The grads of one step, checked (holding the GIL): their data pointers, and
// the Python objects that keep them alive while the GIL is released.
struct Grads {
  // Owned by this call: a callback run while converting the grads may step
  // another set (or this one) on the same thread.
  std::vector<const void*> ptrs;
  std::vector<py::array> views;  // DLPack/buffer-protocol views made for this step
  py::object held;               // a snapshot of the grads sequence
};

class PyTensorSet {
 public:
  PyTensorSet(const py::sequence& params, const std::vector<std::optional<py::sequence>>& states,
              const std::vector<std::string>& state_names) {
    if (states.size() > 3 || state_names.size() != states.size())
      throw py::value_error("states: at most 3 state lists, each with a name");
    const std::size_t n = params.size();
    if (n == 0) throw py::value_error("params: got an empty list (nothing to update)");
    std::vector<TensorView> views(n);
    unsigned mask = 0;
    params_.reserve(n);
    for (std::size_t i = 0; i < n; ++i) {
      const std::string what = indexed("params", i);
      py::object obj = params[i];
      py::array p = view_array(obj, what, Use::written);
      views[i].dtype = check_buffer(p, what, true);
      views[i].param = p.mutable_data();
      views[i].size = static_cast<std::size_t>(p.size());
      layouts_.push_back(layout_of(p));
      params_.push_back(p);
      hold(obj, std::move(p), what);
    }
    for (std::size_t s = 0; s < states.size(); ++s) {
      if (!states[s]) continue;
      mask |= 1u << s;
      const py::sequence& list = *states[s];
      if (list.size() != n)
        throw py::value_error("state '" + state_names[s] + "' has " + std::to_string(list.size()) +
                              " buffers for " + std::to_string(n) + " params");
      for (std::size_t i = 0; i < n; ++i) {
        const std::string what = "state '" + state_names[s] + "'" + "[" + std::to_string(i) + "]";
        py::object obj = list[i];
        py::array a = view_array(obj, what, Use::written);
        check_buffer(a, what, true);
        check_same_layout(a, params_[i], what, indexed("params", i));
        views[i].state[s] = a.mutable_data();
        hold(obj, std::move(a), what);
      }
    }
    set_ = std::make_unique<TensorSet>(views.data(), n, mask);
  }

  std::size_t size() const { return params_.size(); }

  // `step` is 1-based; the rate is that of update step - 1: schedule's value
  // there when one is given, else options.lr, then scaled by a plateau.
  // Returns (found_inf, skipped, grad_norm or None, the learning rate used).
  template <class Options>
  py::tuple step(py::handle grads, const Options& options, std::int64_t step, const Schedule* schedule,
                 double lr_scale, double min_lr, bool skip_nonfinite, double max_grad_norm) {
    Options scheduled = options;
    scheduled.lr = plateau_rate(schedule ? (*schedule)(step - 1) : options.lr, lr_scale, min_lr);
    Stepping stepping(this);
    Grads g = take_grads(grads);
    check_held();
    StepReport report;
    {
      // The step reads and writes only buffers this object keeps alive (and
      // the grads held by `g`), so Python may run meanwhile.
      py::gil_scoped_release release;
      // One step at a time per set: a second thread waits instead of racing.
      std::lock_guard<std::mutex> lock(mutex_);
      set_->set_grads(g.ptrs.data());
      report = set_->step(scheduled, step, StepControl{skip_nonfinite, max_grad_norm});
    }
    return py::make_tuple(report.found_inf, report.skipped,
                          report.grad_norm < 0 ? py::object(py::none()) : py::float_(report.grad_norm),
                          scheduled.lr);
  }

  // The bandwidth probe (TensorSet::stream) over this set's buffers.
  void stream(py::handle grads) {
    Stepping stepping(this);
    Grads g = take_grads(grads);
    check_held();
    py::gil_scoped_release release;  // touches only buffers held here and by `g`
    std::lock_guard<std::mutex> lock(mutex_);
    set_->set_grads(g.ptrs.data());
    set_->stream();
  }

 private:
  // Checks the grads and returns their data pointers. Per grad, a numpy
  // array of the right kind costs a few field reads; anything else (a torch
  // tensor, a buffer) is viewed and checked in full.
  Grads take_grads(py::handle grads) {
    const std::size_t n = params_.size();
    Grads out;
    // A snapshot no other thread can change while the GIL is released: a
    // tuple as it is, a list copied into a tuple (another thread could drop
    // an array from the list mid-step), anything else converted once.
    PyObject* seq = grads.ptr();
    if (PyTuple_Check(seq)) {
      out.held = py::reinterpret_borrow<py::object>(seq);
    } else if (PyList_Check(seq)) {
      out.held = py::reinterpret_steal<py::object>(PyList_AsTuple(seq));
    } else {
      if (!PySequence_Check(seq) || PyUnicode_Check(seq) || PyBytes_Check(seq))
        throw py::type_error("grads: expected a sequence of arrays, got " +
                             std::string(py::str(py::type::of(grads).attr("__name__"))));
      out.held = py::reinterpret_steal<py::object>(PySequence_Fast(seq, "grads: expected a sequence"));
    }
    if (!out.held) throw py::error_already_set();
    seq = out.held.ptr();
    const std::size_t count = static_cast<std::size_t>(PySequence_Fast_GET_SIZE(seq));
    if (count != n)
      throw py::value_error("grads: got " + std::to_string(count) + " for " + std::to_string(n) +
                            " params");
    out.ptrs.resize(n);
    PyObject** items = PySequence_Fast_ITEMS(seq);
    std::vector<std::size_t> converted;  // grads viewed in full: Python code may have run
    for (std::size_t i = 0; i < n; ++i) {
      const void* data = fast_grad_data(items[i], layouts_[i]);
      if (data == nullptr) {
        converted.push_back(i);
        py::handle obj = items[i];
        py::array a = view_array(obj, indexed("grads", i), Use::read);
        check_buffer(a, indexed("grads", i), false);
        check_same_layout(a, params_[i], indexed("grads", i), indexed("params", i));
        data = a.data();
        if (!obj.is(a)) out.views.push_back(std::move(a));
      }
      out.ptrs[i] = data;
    }
    // That code may have resized an array taken on the fast path before it.
    if (!converted.empty())
      for (std::size_t i = 0, c = 0; i < n; ++i) {
        if (c < converted.size() && converted[c] == i) {
          ++c;
          continue;
        }
        if (fast_grad_data(items[i], layouts_[i]) != out.ptrs[i])
          throw py::value_error(indexed("grads", i) + ": changed (resized) while later grads were converted");
      }
    return out;
  }

  // Every param and state is still the buffer it was at construction: the
  // torch checks first (they may run Python code), then the field reads.
  void check_held() const {
    for (std::size_t i : tensor_held_)
      if (const char* why = held_[i].changed_tensor()) fail(i, why);
    for (std::size_t i = 0; i < held_.size(); ++i)
      if (const char* why = held_[i].changed_fields()) fail(i, why);
  }

  [[noreturn]] void fail(std::size_t i, const char* why) const {
    throw py::value_error(names_[i] + ": " + why + " since the optimizer was built; nothing was " +
                          "written (build a new optimizer for the new buffer)");
  }

  void hold(py::handle obj, py::array view, const std::string& what) {
    held_.emplace_back(obj, std::move(view));
    names_.push_back(what);
    if (held_.back().has_tensor()) tensor_held_.push_back(held_.size() - 1);
  }

  std::vector<py::array> params_;
  std::vector<Layout> layouts_;
  std::vector<HeldBuffer> held_;  // params, then states
  std::vector<std::string> names_;
  std::vector<std::size_t> tensor_held_;  // indices into held_ backed by a torch tensor
  std::unique_ptr<TensorSet> set_;
  std::mutex mutex_;
};

// One entry point for every optimizer, all arguments positional: pybind11's
// overload resolution and keyword matching cost microseconds per call, more
// than the whole kernel for a small tensor.
// The options' class, compared by identity: cheaper than py::isinstance's
// type lookup, and the *Options classes are not meant to be subclassed.
template <class Options>
const Options* options_as(py::handle options) {
  static PyTypeObject* const type = reinterpret_cast<PyTypeObject*>(py::type::of<Options>().ptr());
  if (Py_TYPE(options.ptr()) != type) return nullptr;
  return &options.cast<const Options&>();
}

py::tuple step_any(PyTensorSet& set, py::handle grads, py::handle options, std::int64_t step,
                   py::handle schedule, double lr_scale, double min_lr, bool skip_nonfinite,
                   double max_grad_norm) {
  const Schedule* sched = schedule.is_none() ? nullptr : &schedule.cast<const Schedule&>();
  auto run = [&](const auto& o) {
    return set.step(grads, o, step, sched, lr_scale, min_lr, skip_nonfinite, max_grad_norm);
  };
  if (auto* o = options_as<AdamOptions>(options)) return run(*o);
  if (auto* o = options_as<SgdOptions>(options)) return run(*o);
  if (auto* o = options_as<AdagradOptions>(options)) return run(*o);
  if (auto* o = options_as<AdadeltaOptions>(options)) return run(*o);
  if (auto* o = options_as<RmspropOptions>(options)) return run(*o);
  throw py::type_error("options must be one of the gradstep._core *Options classes");
}

}  // namespace

void register_tensor_set(py::module_& m) {
  m.def(
      "view_array",
      [](py::handle obj, const std::string& what) {
        py::array a = view_array(obj, what, Use::written);
        check_buffer(a, what, true);
        return a;
      },
      py::arg("obj"), py::arg("what"),
      "A writeable float32/float64 C-contiguous numpy view of obj, without copying.");
  py::class_<PyTensorSet> cls(m, "TensorSet");
  cls.def(py::init<const py::sequence&, const std::vector<std::optional<py::sequence>>&,
                   const std::vector<std::string>&>(),
          py::arg("params"), py::arg("states"), py::arg("state_names"))
      .def("__len__", &PyTensorSet::size);
  cls.def("step", &step_any, py::arg("grads"), py::arg("options"), py::arg("step"),
          py::arg("schedule") = py::none(), py::arg("lr_scale") = 1.0, py::arg("min_lr") = 0.0,
          py::arg("skip_nonfinite") = false, py::arg("max_grad_norm") = 0.0,
          "One update; returns (found_inf, skipped, grad_norm or None, lr). Pass arguments by position.");
  cls.def("stream", &PyTensorSet::stream, py::arg("grads"),
          "Bandwidth probe: stream this set's buffers like a step, with no optimizer math.\n"
          "Overwrites params and states; `gradstep bench` times it as the memory roof.");
}

}  // namespace gradstep::bindings

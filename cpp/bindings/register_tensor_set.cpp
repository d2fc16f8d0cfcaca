// TensorSet: the params and states of one optimizer, checked once and kept
// alive here; each step checks only the new grads, then runs without the GIL.
#include <pybind11/stl.h>

#include <memory>
#include <mutex>
#include <optional>
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

class PyTensorSet {
 public:
  PyTensorSet(const py::sequence& params, const std::vector<std::optional<py::sequence>>& states,
              const std::vector<std::string>& state_names) {
    if (states.size() > 3 || state_names.size() != states.size())
      throw py::value_error("states: at most 3 state lists, each with a name");
    const std::size_t n = params.size();
    std::vector<TensorView> views(n);
    unsigned mask = 0;
    params_.reserve(n);
    for (std::size_t i = 0; i < n; ++i) {
      py::array p = view_array(params[i], indexed("params", i));
      views[i].dtype = check_buffer(p, indexed("params", i), true);
      views[i].param = p.mutable_data();
      views[i].size = static_cast<std::size_t>(p.size());
      params_.push_back(std::move(p));
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
        py::array a = view_array(list[i], what);
        check_buffer(a, what, true);
        check_same_layout(a, params_[i], what, indexed("params", i));
        views[i].state[s] = a.mutable_data();
        kept_.push_back(std::move(a));
      }
    }
    set_ = std::make_unique<TensorSet>(views.data(), n, mask);
  }

  std::size_t size() const { return params_.size(); }

  // `step` is 1-based; the rate is that of update step - 1: schedule's value
  // there when one is given, else options.lr, then scaled by a plateau.
  // Returns (found_inf, skipped, grad_norm or None, the learning rate used).
  template <class Options>
  py::tuple step(const py::sequence& grads, const Options& options, std::int64_t step, const Schedule* schedule,
                 double lr_scale, double min_lr, bool skip_nonfinite, double max_grad_norm) {
    Options scheduled = options;
    scheduled.lr = plateau_rate(schedule ? (*schedule)(step - 1) : options.lr, lr_scale, min_lr);
    const std::size_t n = params_.size();
    if (grads.size() != n)
      throw py::value_error("grads: got " + std::to_string(grads.size()) + " for " + std::to_string(n) +
                            " params");
    std::vector<const void*> ptrs(n);
    std::vector<py::array> views;  // keeps DLPack/buffer views alive during the step
    for (std::size_t i = 0; i < n; ++i) {
      py::handle obj = grads[i];
      py::array g = view_array(obj, indexed("grads", i));
      check_buffer(g, indexed("grads", i), false);
      check_same_layout(g, params_[i], indexed("grads", i), indexed("params", i));
      ptrs[i] = g.data();
      if (!obj.is(g)) views.push_back(std::move(g));
    }
    StepReport report;
    {
      // The step reads and writes only buffers this object keeps alive (and
      // the grads held by `grads`/`views`), so Python may run meanwhile.
      py::gil_scoped_release release;
      // One step at a time per set: a second thread waits instead of racing.
      std::lock_guard<std::mutex> lock(mutex_);
      set_->set_grads(ptrs.data());
      report = set_->step(scheduled, step, StepControl{skip_nonfinite, max_grad_norm});
    }
    return py::make_tuple(report.found_inf, report.skipped,
                          report.grad_norm < 0 ? py::object(py::none()) : py::float_(report.grad_norm),
                          scheduled.lr);
  }

 private:
  std::vector<py::array> params_;
  std::vector<py::array> kept_;
  std::unique_ptr<TensorSet> set_;
  std::mutex mutex_;
};

// One entry point for every optimizer, all arguments positional: pybind11's
// overload resolution and keyword matching cost microseconds per call, more
// than the whole kernel for a small tensor.
py::tuple step_any(PyTensorSet& set, const py::sequence& grads, py::handle options, std::int64_t step,
                   py::handle schedule, double lr_scale, double min_lr, bool skip_nonfinite,
                   double max_grad_norm) {
  const Schedule* sched = schedule.is_none() ? nullptr : &schedule.cast<const Schedule&>();
  auto run = [&](const auto& o) {
    return set.step(grads, o, step, sched, lr_scale, min_lr, skip_nonfinite, max_grad_norm);
  };
  if (py::isinstance<AdamOptions>(options)) return run(options.cast<const AdamOptions&>());
  if (py::isinstance<SgdOptions>(options)) return run(options.cast<const SgdOptions&>());
  if (py::isinstance<AdagradOptions>(options)) return run(options.cast<const AdagradOptions&>());
  if (py::isinstance<AdadeltaOptions>(options)) return run(options.cast<const AdadeltaOptions&>());
  if (py::isinstance<RmspropOptions>(options)) return run(options.cast<const RmspropOptions&>());
  throw py::type_error("options must be one of the gradstep._core *Options classes");
}

}  // namespace

void register_tensor_set(py::module_& m) {
  m.def(
      "view_array",
      [](py::handle obj, const std::string& what) {
        py::array a = view_array(obj, what);
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
}

}  // namespace gradstep::bindings

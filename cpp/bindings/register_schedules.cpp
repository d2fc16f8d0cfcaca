// Schedule objects and their factories. Defaults live in gradstep.schedules
// (one place), so the factories here take every argument explicitly.
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include "gradstep/schedule.hpp"
#include "register.hpp"

namespace py = pybind11;

void gradstep::bindings::register_schedules(py::module_& m) {
  using Steps = py::array_t<std::int64_t, py::array::c_style>;
  py::class_<Schedule>(m, "Schedule")
      .def("at", &Schedule::operator(), py::arg("step"), "The rate of update `step` (0-based).")
      .def(
          "eval",
          [](const Schedule& s, const Steps& steps) {
            Steps::ShapeContainer shape(steps.shape(), steps.shape() + steps.ndim());
            py::array_t<double> out(shape);
            s.eval(steps.data(), out.mutable_data(), static_cast<std::size_t>(steps.size()));
            return out;
          },
          py::arg("steps").noconvert(), "Rates of an int64 array of steps, same shape.")
      .def_property_readonly("num_nodes", [](const Schedule& s) { return s.nodes().size(); });

  py::module_ f = m.def_submodule("schedules", "Schedule factories; see gradstep.schedules.");
  f.attr("MAX_DEPTH") = kMaxScheduleDepth;
  f.attr("MAX_NODES") = kMaxScheduleNodes;
  f.def("constant", &Schedule::constant, py::arg("lr"));
  f.def("step", &Schedule::step, py::arg("lr"), py::arg("step_size"), py::arg("gamma"));
  f.def("multistep", &Schedule::multistep, py::arg("lr"), py::arg("milestones"), py::arg("gamma"));
  f.def("exponential", &Schedule::exponential, py::arg("lr"), py::arg("gamma"));
  f.def("exponential_rate", &Schedule::exponential_rate, py::arg("lr"), py::arg("rate"));
  f.def("exponential_decay", &Schedule::exponential_decay, py::arg("lr"), py::arg("decay_rate"),
        py::arg("decay_steps"), py::arg("staircase"));
  f.def("inverse_time", &Schedule::inverse_time, py::arg("lr"), py::arg("decay_rate"), py::arg("decay_steps"),
        py::arg("staircase"));
  f.def("time_based", &Schedule::time_based, py::arg("lr"), py::arg("decay"));
  f.def("polynomial", &Schedule::polynomial, py::arg("lr"), py::arg("total_steps"), py::arg("power"),
        py::arg("end_lr"));
  f.def("linear", &Schedule::linear, py::arg("start_lr"), py::arg("end_lr"), py::arg("total_steps"));
  f.def("cosine", &Schedule::cosine, py::arg("lr"), py::arg("total_steps"), py::arg("final_lr"));
  f.def("cosine_restarts", &Schedule::cosine_restarts, py::arg("lr"), py::arg("period"), py::arg("period_mult"),
        py::arg("final_lr"));
  f.def("cyclic", &Schedule::cyclic, py::arg("base_lr"), py::arg("max_lr"), py::arg("step_size_up"),
        py::arg("step_size_down"), py::arg("mode"), py::arg("gamma"));
  f.def("one_cycle", &Schedule::one_cycle, py::arg("max_lr"), py::arg("total_steps"), py::arg("pct_start"),
        py::arg("anneal_strategy"), py::arg("div_factor"), py::arg("final_div_factor"), py::arg("three_phase"));
  f.def("piecewise_constant", &Schedule::piecewise_constant, py::arg("boundaries"), py::arg("values"));
  f.def("warmup", &Schedule::warmup, py::arg("schedule"), py::arg("steps"), py::arg("start_lr"));
  f.def("sequence", &Schedule::sequence, py::arg("schedules"), py::arg("boundaries"));

  m.def("plateau_rate", &plateau_rate, py::arg("rate"), py::arg("scale"), py::arg("min_lr"),
        "max(scale * rate, min(rate, min_lr)): a plateau-scaled rate.");
}

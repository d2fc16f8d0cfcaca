// Optimizer options as small Python classes with torch's field names; the
// Python optimizers build one at construction and pass it to every step.
#include "gradstep/optim.hpp"
#include "register.hpp"

namespace py = pybind11;

namespace {

template <class Options>
py::class_<Options> options_class(py::module_& m, const char* name) {
  py::class_<Options> cls(m, name);
  cls.def(py::init<>())
      .def("validate", [](const Options& o) { gradstep::validate(o); })
      .def_property_readonly("state_mask", [](const Options& o) { return gradstep::state_mask(o); })
      .def_readwrite("lr", &Options::lr)
      .def_readwrite("weight_decay", &Options::weight_decay)
      .def_readwrite("maximize", &Options::maximize);
  return cls;
}

}  // namespace

void gradstep::bindings::register_options(py::module_& m) {
  options_class<SgdOptions>(m, "SgdOptions")
      .def_readwrite("momentum", &SgdOptions::momentum)
      .def_readwrite("dampening", &SgdOptions::dampening)
      .def_readwrite("nesterov", &SgdOptions::nesterov);
  options_class<AdagradOptions>(m, "AdagradOptions")
      .def_readwrite("lr_decay", &AdagradOptions::lr_decay)
      .def_readwrite("eps", &AdagradOptions::eps);
  options_class<AdadeltaOptions>(m, "AdadeltaOptions")
      .def_readwrite("rho", &AdadeltaOptions::rho)
      .def_readwrite("eps", &AdadeltaOptions::eps);
  options_class<RmspropOptions>(m, "RmspropOptions")
      .def_readwrite("alpha", &RmspropOptions::alpha)
      .def_readwrite("eps", &RmspropOptions::eps)
      .def_readwrite("momentum", &RmspropOptions::momentum)
      .def_readwrite("centered", &RmspropOptions::centered);
  options_class<AdamOptions>(m, "AdamOptions")
      .def_readwrite("beta1", &AdamOptions::beta1)
      .def_readwrite("beta2", &AdamOptions::beta2)
      .def_readwrite("eps", &AdamOptions::eps)
      .def_readwrite("amsgrad", &AdamOptions::amsgrad)
      .def_readwrite("decoupled_weight_decay", &AdamOptions::decoupled_weight_decay);
}

#include <pybind11/stl.h>

#include "gradstep/isa.hpp"
#include "register.hpp"

namespace py = pybind11;

void gradstep::bindings::register_isa(py::module_& m) {
  m.def("isa", [] { return isa_name(active_isa()); }, "The ISA target the kernels run on.");
  m.def(
      "available_isas",
      [] {
        std::vector<std::string> names;
        for (Isa isa : gradstep::available_isas()) names.emplace_back(isa_name(isa));
        return names;
      },
      "Targets compiled in and supported by this CPU, slowest first.");
  m.def("set_isa", &set_isa, py::arg("name"), "Force a target (scalar, avx2, avx512).");
  m.def("set_num_threads", &set_num_threads, py::arg("n"));
  m.def("get_num_threads", &num_threads);
}

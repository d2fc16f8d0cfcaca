// Schedules and their kinds. Every kind struct of schedule.hpp becomes a
// ScheduleKind object in _core.schedules (name, fields with their Python
// types, defaults read from a default-constructed struct, and a builder);
// gradstep.schedules wraps each in its factory. Nothing here is per kind
// except the list at the bottom.
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <functional>
#include <string>
#include <type_traits>

#include "gradstep/schedule.hpp"
#include "register.hpp"

namespace py = pybind11;

namespace {

using gradstep::Schedule;

// What gradstep.schedules checks a field's argument against (and converts it to).
template <class T>
struct PyType;
template <>
struct PyType<double> {
  static constexpr const char* name = "real";
};
template <>
struct PyType<std::int64_t> {
  static constexpr const char* name = "int";
};
template <>
struct PyType<std::optional<std::int64_t>> {
  static constexpr const char* name = "int_or_none";
};
template <>
struct PyType<bool> {
  static constexpr const char* name = "flag";
};
template <>
struct PyType<std::vector<std::int64_t>> {
  static constexpr const char* name = "ints";
};
template <>
struct PyType<std::vector<double>> {
  static constexpr const char* name = "reals";
};
template <>
struct PyType<Schedule> {
  static constexpr const char* name = "schedule";
};
template <>
struct PyType<std::vector<Schedule>> {
  static constexpr const char* name = "schedules";
};
template <>
struct PyType<gradstep::schedules::CyclicMode> {
  static constexpr const char* name = "text";
};
template <>
struct PyType<gradstep::schedules::Anneal> {
  static constexpr const char* name = "text";
};

template <class T>
T from_python(const char* field, py::handle value) {
  if constexpr (std::is_enum_v<T>)
    return gradstep::schedules::parse_choice<T>(field, value.cast<std::string>());
  else
    return value.cast<T>();
}

template <class T>
py::object to_python(const T& value) {
  if constexpr (std::is_enum_v<T>)
    return py::str(gradstep::schedules::choice_name(value));
  else
    return py::cast(value);
}

struct ScheduleKind {
  std::string name;
  py::tuple fields;   // ((field, type), ...) in the struct's order
  py::dict defaults;  // field -> default, for the fields that have one
  std::function<Schedule(const py::args&)> build;
};

template <class Kind>
ScheduleKind describe() {
  ScheduleKind info;
  info.name = Kind::name;
  const Kind defaults{};
  py::list fields;
  std::apply(
      [&](const auto&... field) {
        ((fields.append(py::make_tuple(field.name, PyType<std::decay_t<decltype(defaults.*field.member)>>::name)),
          field.required ? void() : void(info.defaults[field.name] = to_python(defaults.*field.member))),
         ...);
      },
      Kind::fields());
  info.fields = py::tuple(fields);
  info.build = [](const py::args& args) {
    constexpr std::size_t n = std::tuple_size_v<decltype(Kind::fields())>;
    if (args.size() != n)
      throw py::type_error(std::string(Kind::name) + " takes " + std::to_string(n) + " field values, got " +
                           std::to_string(args.size()));
    // Each field converted and checked in order, so the first bad one is
    // reported whatever its type (a mode's name is parsed here).
    Kind kind{};
    std::size_t i = 0;
    std::apply(
        [&](const auto&... field) {
          ((kind.*field.member = from_python<std::decay_t<decltype(kind.*field.member)>>(field.name, args[i++]),
            field.check(kind)),
           ...);
        },
        Kind::fields());
    return Schedule(std::move(kind));
  };
  return info;
}

// The root node's fields, as (name, value) pairs in the struct's order.
py::list node_fields(const Schedule& s) {
  py::list out;
  std::visit(
      [&](const auto& kind) {
        std::apply([&](const auto&... field) { (out.append(py::make_tuple(field.name, to_python(kind.*field.member))), ...); },
                   std::decay_t<decltype(kind)>::fields());
      },
      s.node());
  return out;
}

}  // namespace

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
      .def_property_readonly("name", &Schedule::name, "The root node's kind.")
      .def("fields", &node_fields, "The root node's fields: (name, value) pairs, child schedules as Schedule.")
      .def_property_readonly("num_nodes", &Schedule::size);

  py::class_<ScheduleKind>(m, "ScheduleKind")
      .def_readonly("name", &ScheduleKind::name)
      .def_readonly("fields", &ScheduleKind::fields)
      .def_readonly("defaults", &ScheduleKind::defaults)
      .def("__call__", [](const ScheduleKind& k, const py::args& args) { return k.build(args); },
           "Build a schedule from the field values, in order (converted and checked by gradstep.schedules).")
      .def("__repr__", [](const ScheduleKind& k) { return "<schedule kind " + k.name + ">"; });

  py::module_ f = m.def_submodule("schedules", "Schedule kinds; see gradstep.schedules.");
  f.attr("MAX_DEPTH") = kMaxScheduleDepth;
  f.attr("MAX_NODES") = kMaxScheduleNodes;
  py::list kinds;
  auto add = [&](const char* attr, ScheduleKind info) {
    py::object obj = py::cast(std::move(info));
    f.attr(attr) = obj;
    kinds.append(obj);
  };
  using namespace gradstep::schedules;
  add("Constant", describe<Constant>());
  add("Step", describe<Step>());
  add("MultiStep", describe<MultiStep>());
  add("Exponential", describe<Exponential>());
  add("ExponentialRate", describe<ExponentialRate>());
  add("ExponentialDecay", describe<ExponentialDecay>());
  add("InverseTime", describe<InverseTime>());
  add("TimeBased", describe<TimeBased>());
  add("Polynomial", describe<Polynomial>());
  add("Linear", describe<Linear>());
  add("Cosine", describe<Cosine>());
  add("CosineRestarts", describe<CosineRestarts>());
  add("Cyclic", describe<Cyclic>());
  add("OneCycle", describe<OneCycle>());
  add("PiecewiseConstant", describe<PiecewiseConstant>());
  add("Warmup", describe<Warmup>());
  add("Sequence", describe<Sequence>());
  f.attr("KINDS") = py::tuple(kinds);

  m.def("plateau_rate", &plateau_rate, py::arg("rate"), py::arg("scale"), py::arg("min_lr"),
        "max(scale * rate, min(rate, min_lr)): a plateau-scaled rate.");
}

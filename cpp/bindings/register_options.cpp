// Optimizer options as small Python classes, one per Declaration (optim.hpp),
// all bound by the same template: keyword construction, the fields as
// attributes, validate(), state_mask, and spec(), the declaration as plain
// Python data from which gradstep builds everything else per optimizer.
#include <pybind11/stl.h>

#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "gradstep/optim.hpp"
#include "register.hpp"

namespace py = pybind11;

namespace gradstep::bindings {
namespace {

const char* bound_name(Bound b) {
  switch (b) {
    case Bound::any: return "any";
    case Bound::nonneg: return "nonneg";
    case Bound::unit_closed: return "unit_closed";
    case Bound::unit_open: return "unit_open";
    case Bound::positive: return "positive";
    case Bound::positive_or_inf: return "positive_or_inf";
    case Bound::finite: return "finite";
    case Bound::count: return "count";
    case Bound::nonpos: return "nonpos";
    case Bound::at_least_one: return "at_least_one";
  }
  return "any";
}

Bound bound_named(const std::string& name) {
  for (Bound b : {Bound::any, Bound::nonneg, Bound::unit_closed, Bound::unit_open, Bound::positive,
                  Bound::positive_or_inf, Bound::finite, Bound::count, Bound::nonpos, Bound::at_least_one})
    if (name == bound_name(b)) return b;
  throw py::value_error("unknown bound '" + name + "'");
}

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::positional: return "positional";
    case Kind::keyword_only: return "keyword_only";
    case Kind::fixed: return "fixed";
    case Kind::carried: return "carried";
    case Kind::reference_only: return "reference_only";
  }
  return "positional";
}

}  // namespace

const char* extent_name(Extent e) {
  switch (e) {
    case Extent::full: return "full";
    case Extent::rows: return "rows";
    case Extent::cols: return "cols";
    case Extent::vector: return "vector";
    case Extent::strided: return "strided";
  }
  return "full";
}

namespace {

const char* keep_name(Keep k) {
  switch (k) {
    case Keep::group: return "group";
    case Keep::optimizer: return "optimizer";
    case Keep::absent: return "absent";
  }
  return "group";
}

template <class Options, class Member>
py::object field_named(Member member) {
  if (member == nullptr) return py::none();
  for (const auto& f : Declaration<Options>::fields) {
    if constexpr (std::is_same_v<Member, double Options::*>) {
      if (f.real == member) return py::str(f.name);
    } else {
      if (f.flag == member) return py::str(f.name);
    }
  }
  return py::none();
}

// Declaration::per_tensor, false when it declares none.
template <class D, class = void>
struct PerTensor : std::false_type {};
template <class D>
struct PerTensor<D, std::void_t<decltype(D::per_tensor)>> : std::bool_constant<D::per_tensor> {};

// Whether the step reduces over its buffers between passes (Declaration::partial_sums > 0).
template <class D, class = void>
struct Reduces : std::false_type {};
template <class D>
struct Reduces<D, std::void_t<decltype(D::partial_sums)>> : std::bool_constant<(D::partial_sums > 0)> {};

// The declaration as plain Python data (see python/gradstep/_spec.py).
template <class Options>
py::dict spec_of() {
  using D = Declaration<Options>;
  const Options defaults{};
  py::list fields;
  for (const auto& f : D::fields) {
    py::dict d;
    d["name"] = f.name;
    d["type"] = f.flag != nullptr || f.boolean ? "flag" : "real";
    d["option"] = f.real != nullptr || f.flag != nullptr;
    if (f.real != nullptr)
      d["default"] = defaults.*f.real;
    else if (f.flag != nullptr)
      d["default"] = defaults.*f.flag;
    else if (f.boolean)
      d["default"] = f.initial != 0.0;
    else
      d["default"] = f.initial;
    d["bound"] = bound_name(f.bound);
    d["rule"] = f.bound == Bound::any ? py::object(py::none()) : py::object(py::str(bound_rule(f.bound)));
    d["kind"] = kind_name(f.kind);
    d["group"] = f.group != nullptr ? py::object(py::str(f.group)) : py::object(py::none());
    d["kernel_default"] = f.kernel_default;
    d["none_value"] = f.none_allowed ? py::object(py::float_(f.none_value)) : py::object(py::none());
    d["initial_from"] = f.initial_from != nullptr ? py::object(py::str(f.initial_from)) : py::object(py::none());
    d["keep"] = keep_name(f.keep);
    d["rate_at_start"] = f.rate_at_start;
    d["fills"] = f.fills >= 0 ? py::object(py::str(D::slots[static_cast<std::size_t>(f.fills)].name))
                              : py::object(py::none());
    fields.append(d);
  }
  py::list states;
  for (const auto& s : D::slots) {
    py::dict d;
    d["name"] = s.name;
    d["needed_when"] = s.if_nonzero != nullptr ? field_named<Options>(s.if_nonzero)
                       : s.if_set != nullptr   ? field_named<Options>(s.if_set)
                                               : py::object(py::none());
    d["copy_param"] = s.copy_param;
    d["extent"] = extent_name(s.extent);
    d["stride"] = field_named<Options>(s.stride);
    states.append(d);
  }
  py::list checks;
  for (const auto& c : D::checks) {
    py::dict d;
    d["message"] = c.message;
    d["when"] = field_named<Options>(c.when);
    d["positive"] = field_named<Options>(c.positive);
    d["zero"] = field_named<Options>(c.zero);
    d["one"] = field_named<Options>(c.one);
    checks.append(d);
  }
  py::list variants;
  for (const auto& v : D::variants) {
    py::dict fixed, changed;
    for (std::size_t i = 0; i < v.count; ++i) {
      const Override& o = v.overrides[i];
      bool is_flag = false;
      for (const auto& f : D::fields)
        if (std::strcmp(f.name, o.field) == 0) is_flag = f.flag != nullptr;
      py::object value = is_flag ? py::object(py::bool_(o.value != 0.0)) : py::object(py::float_(o.value));
      (o.fixed ? fixed : changed)[o.field] = value;
    }
    py::dict d;
    d["name"] = v.name;
    d["summary"] = v.summary;
    d["fixed"] = fixed;
    d["defaults"] = changed;
    variants.append(d);
  }
  py::dict out;
  out["name"] = D::name;
  out["reference"] = D::reference;
  out["options"] = D::options;
  out["summary"] = D::summary;
  out["equations"] = D::equations;
  out["torch_step_state"] = D::torch_step_state;
  out["per_tensor"] = PerTensor<D>::value;
  out["reduces"] = Reduces<D>::value;
  out["fields"] = fields;
  out["states"] = states;
  out["checks"] = checks;
  out["variants"] = variants;
  if constexpr (HasMode<Options>::value) {
    py::dict mode;
    mode["flag"] = field_named<Options>(D::mode.flag);
    mode["on"] = D::mode.on;
    mode["off"] = D::mode.off;
    mode["step_refused"] = D::mode.step_refused;
    out["mode"] = mode;
  } else {
    out["mode"] = py::none();
  }
  return out;
}

// Sets the option `name` from a Python value, converting as attribute
// assignment does; TypeError for an unknown name or a value of the wrong type.
template <class Options>
void set_field(Options& o, const std::string& name, py::handle value) {
  for (const auto& f : Declaration<Options>::fields) {
    if (name != f.name || (f.real == nullptr && f.flag == nullptr)) continue;
    try {
      if (f.real != nullptr)
        o.*f.real = value.cast<double>();
      else
        o.*f.flag = value.cast<bool>();
    } catch (const py::cast_error&) {
      throw py::type_error(name + " must be " + (f.real ? "a real number" : "a bool") + ", got " +
                           std::string(py::str(py::type::of(value).attr("__name__"))));
    }
    return;
  }
  throw py::type_error(std::string(Declaration<Options>::options) + "() got an unexpected keyword argument '" +
                       name + "'");
}

template <class Options>
void bind_options(py::module_& m, py::list& all) {
  using D = Declaration<Options>;
  py::class_<Options> cls(m, D::options);
  cls.def(py::init([](const py::kwargs& kwargs) {
            Options o;
            for (auto item : kwargs) set_field(o, py::str(item.first), item.second);
            return o;
          }),
          "Options with the declared defaults; any field may be given by keyword.");
  for (const auto& f : D::fields) {
    if (f.real != nullptr) cls.def_readwrite(f.name, f.real);
    if (f.flag != nullptr) cls.def_readwrite(f.name, f.flag);
  }
  cls.def("validate", [](const Options& o) { validate(o); })
      .def_property_readonly("state_mask", [](const Options& o) { return state_mask(o); })
      .def_static("spec", &spec_of<Options>, "The optimizer's declaration as plain data.")
      .def("__repr__", [](const Options& o) {
        std::string out = std::string(D::options) + "(";
        const char* sep = "";
        for (const auto& f : D::fields) {
          if (f.real == nullptr && f.flag == nullptr) continue;
          out += sep + std::string(f.name) + "=" +
                 std::string(py::repr(f.real ? py::object(py::float_(o.*f.real)) : py::object(py::bool_(o.*f.flag))));
          sep = ", ";
        }
        return out + ")";
      });
  all.append(cls);
}

template <class... Options>
void bind_all(py::module_& m, OptionsList<Options...>) {
  py::list all;
  (bind_options<Options>(m, all), ...);
  m.attr("OPTIONS") = py::tuple(all);
}

}  // namespace

void register_options(py::module_& m) {
  bind_all(m, AllOptions{});
  m.def(
      "check_bound",
      [](const std::string& name, const std::string& bound, double value) {
        check_bound(name.c_str(), bound_named(bound), value);
      },
      py::arg("name"), py::arg("bound"), py::arg("value"),
      "ValueError unless value lies within the named bound of a declaration's field.");
}

}  // namespace gradstep::bindings

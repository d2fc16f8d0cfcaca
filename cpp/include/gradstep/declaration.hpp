// The vocabulary of an optimizer's declaration. Each optimizer specializes
// Declaration<Options> once, next to its options struct (optim.hpp); the
// generic validate() and state_mask() read it, and the Python binding turns
// it into the spec from which gradstep builds the Python class, the torch
// adapter, the kernel function, checkpoint metadata, stubs and the docs table.
// Plain constexpr data: no Python here.
#pragma once

#include <array>
#include <cstddef>
#include <type_traits>

namespace gradstep {

// The values a real option may take. Everything but `any` also requires a
// finite number.
enum class Bound : unsigned char {
  any,          // flags
  nonneg,       // >= 0
  unit_closed,  // in [0, 1]
  unit_open,    // in [0, 1)
  positive,     // > 0 (the learning-rate-free optimizers' d0 and eps: 0 would stall them)
  positive_or_inf,  // > 0, +inf allowed (growth_rate: inf = unbounded)
  finite,       // any finite number (a carried sum that may turn negative)
  count,        // a whole number >= 0 (a carried step count)
  nonpos,       // <= 0 (Adafactor's beta2_decay)
  at_least_one, // >= 1 (Adafactor's clipping threshold d)
};

// How a field appears in the Python class's constructor (gs.X and the spec's
// users). Kernel functions (gs.kernels.x_step) take every option by keyword.
enum class Kind : unsigned char {
  positional,    // positional-or-keyword, in declaration order
  keyword_only,  // after the `*` (torch's maximize)
  fixed,         // not a constructor argument: the class keeps the default
  // Not a constructor argument: a number the optimizer carries from step to
  // step (Prodigy's d, Schedule-Free's weight_sum). Each step reads it from
  // the options and reports its new value (StepReport::carried, in
  // declaration order), which the caller puts in the options of the next
  // step; state_dicts and checkpoints keep it. It starts at the struct's
  // default, or at the value of the field named by `initial_from`. A carried
  // flag is a Mode's state (below): steps pass it on unchanged.
  carried,
  // An argument of the reference's constructor alone (gradstep.torch.X's,
  // not gs.X's, and no option): lion_pytorch's use_triton. It selects
  // something gradstep does not do, so only its default is accepted.
  reference_only,
};

// Where the reference (torch.optim.X, or the class Declaration::reference
// names) keeps a constructor argument. gradstep.torch.X keeps it in the same
// place, so that its param_groups and state_dict are the reference's.
enum class Keep : unsigned char {
  group,      // a param-group key (torch.optim's way)
  optimizer,  // on the optimizer object, not in param_groups nor state_dict (lion_pytorch's
              // decoupled_weight_decay)
  absent,     // not an argument of the reference: gradstep.torch.X takes the default (Lion's maximize)
};

// One constructor value: an option (a member of the struct, `real` or
// `flag` set) or a Python-only construction value (neither set: it has its
// own `initial` default, and fills the state slot `fills` when a state is
// created, as Adagrad's initial_accumulator_value fills `sum`; or, of
// Kind::reference_only, an argument of the reference's constructor alone).
template <class Options>
struct Field {
  const char* name;                 // member, Python keyword and the reference's name
  double Options::*real = nullptr;  // the member, for a real option
  bool Options::*flag = nullptr;    // the member, for a flag
  Bound bound = Bound::any;
  Kind kind = Kind::positional;
  // The Python parameter holding this field together with the next ones of
  // the same group, as a tuple in declaration order (Adam's betas = (beta1,
  // beta2)); nullptr: the field is its own parameter.
  const char* group = nullptr;
  double initial = 0.0;  // default of a Python-only value (options: the struct's initializer)
  int fills = -1;        // state slot a Python-only value initialises
  // lr only: gs.kernels.x_step gives lr its default too (elsewhere lr is
  // required there, every other option has its default).
  bool kernel_default = false;
  const char* initial_from = nullptr;  // carried only: the field whose value it starts at
  // A real whose Python value may be None, which stands for none_value in
  // the options: NaN for a value left unset that the optimizer derives from
  // others (Prodigy's beta3 = None: sqrt(beta2)), 0 for "off" (timm's Lamb,
  // max_grad_norm=None: no clipping). Any other value obeys the bound.
  bool none_allowed = false;
  double none_value = 0.0;
  Keep keep = Keep::group;
  bool boolean = false;  // a value that is no option (reference_only) is a bool, not a number
  // A fixed option gradstep fills with the rate the optimizer starts from
  // (Lion's init_lr): gs.X with its base rate at step 0, set again whenever
  // the rate is; gradstep.torch.X with its constructor's lr, as the reference.
  bool rate_at_start = false;

  constexpr Field keyword_only() const {
    Field f = *this;
    f.kind = Kind::keyword_only;
    return f;
  }
  constexpr Field fixed() const {
    Field f = *this;
    f.kind = Kind::fixed;
    return f;
  }
  constexpr Field carried(const char* from = nullptr) const {
    Field f = *this;
    f.kind = Kind::carried;
    f.initial_from = from;
    return f;
  }
  constexpr Field or_none(double stands_for) const {
    Field f = *this;
    f.none_allowed = true;
    f.none_value = stands_for;
    return f;
  }
  constexpr Field with_kernel_default() const {
    Field f = *this;
    f.kernel_default = true;
    return f;
  }
  constexpr Field in(const char* group_name) const {
    Field f = *this;
    f.group = group_name;
    return f;
  }
  constexpr Field on_optimizer() const {
    Field f = *this;
    f.keep = Keep::optimizer;
    return f;
  }
  constexpr Field not_in_reference() const {
    Field f = *this;
    f.keep = Keep::absent;
    return f;
  }
  constexpr Field filled_with_rate_at_start() const {
    Field f = *this;
    f.rate_at_start = true;
    return f;
  }
};

template <class O>
constexpr Field<O> real(const char* name, double O::*member, Bound bound) {
  Field<O> f{name};
  f.real = member;
  f.bound = bound;
  return f;
}
template <class O>
constexpr Field<O> flag(const char* name, bool O::*member) {
  Field<O> f{name};
  f.flag = member;
  return f;
}
// A Python-only value: not an option of the step, but of the class.
template <class O>
constexpr Field<O> initial_value(const char* name, double initial, Bound bound, int fills_slot) {
  Field<O> f{name};
  f.bound = bound;
  f.initial = initial;
  f.fills = fills_slot;
  return f;
}

// An argument only the reference's constructor takes, a flag with this
// default (Kind::reference_only).
template <class O>
constexpr Field<O> reference_flag(const char* name, bool default_value) {
  Field<O> f{name};
  f.kind = Kind::reference_only;
  f.boolean = true;
  f.initial = default_value ? 1.0 : 0.0;
  return f;
}

// How many elements a state slot holds for a param, from the param's size and
// its matrix shape (TensorView: batch, rows, cols, the last two dims and the
// product of the others; 0-d and 1-d params are no matrix). A slot whose
// extent gives 0 for a param has no buffer for it (its pointer may be null).
enum class Extent : unsigned char {
  full,     // the param's size (every optimizer's default)
  rows,     // a matrix: batch * rows, one per row, torch's shape (..., R, 1); no matrix: none
  cols,     // a matrix: batch * cols, one per column, shape (..., 1, C); no matrix: none
  vector,   // no matrix (0-d, 1-d): the param's size; a matrix: none (Adafactor's variance)
  strided,  // ceil(size / stride): every stride-th element, p.flatten()[::stride], stride
            // the slot's option (Prodigy's slice_p, a whole number >= 1)
};

// A state slot (TensorView::state[i]) under the reference's name, and when the
// optimizer needs it: always, when a real option is not 0, or when a flag is set.
template <class Options>
struct Slot {
  const char* name;
  double Options::*if_nonzero = nullptr;
  bool Options::*if_set = nullptr;
  // Starts as a copy of the param (Prodigy's p0, Schedule-Free's z) rather
  // than at zero (or at a Python-only value's fill).
  bool copy_param = false;
  Extent extent = Extent::full;
  double Options::*stride = nullptr;  // Extent::strided: the option holding the stride

  // A slot of another extent than the param's (Adafactor's row_var: sized(Extent::rows)).
  constexpr Slot sized(Extent e) const {
    Slot s = *this;
    s.extent = e;
    return s;
  }
  // Every stride-th element of the param, the stride an option (Prodigy's slice_p).
  constexpr Slot every(double Options::*stride_option) const {
    Slot s = *this;
    s.extent = Extent::strided;
    s.stride = stride_option;
    return s;
  }
};

// A rule over several fields, as data: when the flag `when` is set (always
// when it is nullptr), the field `positive` must be > 0, the field `zero`
// must be 0 and the field `one` must be 1 (any may be nullptr; when all are,
// setting `when` is refused: an option gradstep does not support, such as
// Prodigy's fsdp_in_use). `message` is the error and the documentation.
template <class Options>
struct Check {
  const char* message;
  bool Options::*when;
  double Options::*positive = nullptr;
  double Options::*zero = nullptr;
  double Options::*one = nullptr;
};

// A field a variant changes: fixed to `value` (no longer an argument of the
// variant's class or kernel function) or given another default.
struct Override {
  const char* field;
  double value;  // a flag's value is 0 or 1
  bool fixed;
};

// Another class over the same options and kernel (AdamW: Adam with
// decoupled_weight_decay fixed true and weight_decay defaulting to 1e-2).
struct Variant {
  const char* name;     // gs.X, gradstep.torch.X, torch.optim.X; kernel function x_step
  const char* summary;  // one line for the docstring
  std::array<Override, 4> overrides;
  std::size_t count;    // overrides used
};

// Two states the params can be in, and a pass over every tensor that moves
// them from one to the other (Schedule-Free: the params hold the point y the
// gradients are taken at while training, and the average x for evaluation).
// `flag` is a carried flag, true in the state `on`; the methods named `on`
// and `off` (gs.X.train(), gs.X.eval()) run the kernel's switch_mode() when
// the params are not already there; a step is refused (std::logic_error,
// with `step_refused` as its message) unless the flag is set. Checkpoints keep
// the flag with the other carried values.
template <class Options>
struct Mode {
  bool Options::*flag;
  const char* on;
  const char* off;
  const char* step_refused;
};

// Specialized next to each options struct with:
//   name        gs.X / gradstep.torch.X and the reference's class; the kernel function is
//               gs.kernels.<lower(name)>_step
//   reference   the module of the reference class <reference>.<name>: "torch.optim", or the
//               package of an optimizer torch.optim has not ("lion_pytorch")
//   options     the bound options class, _core.<options>
//   summary     one line for the docstring
//   equations   the update, as the kernel in cpp/src/algorithms computes it
//   torch_step_state  torch keeps state["step"] for it
//   fields, slots, checks, variants (std::array of the types above)
// and optionally
//   partial_sums  how many sums per chunk its step reduces (a kernel with its
//                 own step(): see kernel_table.hpp); 0 when absent
//   per_tensor    true when its step reduces over each tensor (LAMB's trust
//                 ratios): then the tensors of a flat buffer (gs.flatten) are
//                 stepped as tensors, not as one vector; false when absent
//   mode          a Mode<Options> (its kernel file defines switch_mode())
template <class Options>
struct Declaration;

// Whether an optimizer's declaration has a mode.
template <class Options, class = void>
struct HasMode : std::false_type {};
template <class Options>
struct HasMode<Options, std::void_t<decltype(Declaration<Options>::mode)>> : std::true_type {};

}  // namespace gradstep

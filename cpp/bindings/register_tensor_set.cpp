// TensorSet: the params and states of one optimizer, checked once and kept
// alive here; each step checks only the new grads, then runs without the GIL.
#include <pybind11/stl.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <variant>
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

template <class... Options>
std::variant<std::monostate, Options...> variant_of(OptionsList<Options...>);
// The options of any declared optimizer, or none yet.
using AnyOptions = decltype(variant_of(AllOptions{}));

// Everything a step uses besides the buffers, set when it changes (not
// passed per step): the options, the learning rate and the safeguards. This
// is the one owner of the rate: a base rate or a schedule, then the plateau
// scale and floor (the rate of update k is plateau_rate(base(k), lr_scale,
// min_lr)). Shared by the sets stepping the same buffers (a flat model and
// its per-tensor views).
struct Settings {
  AnyOptions options;
  bool have_rate = false;
  double base_lr = 0.0;
  py::object schedule_holder;  // keeps `schedule` alive
  const Schedule* schedule = nullptr;
  py::object source = py::none();  // the rate as given (a number, a schedule, a callable)
  double lr_scale = 1.0, min_lr = 0.0;
  StepControl control;
  double last_lr = 0.0;  // the rate of the last step taken

  double base_at(std::int64_t k) const {
    if (!have_rate) throw py::value_error("no learning rate set: call set_lr or set_schedule first");
    return schedule ? (*schedule)(k) : base_lr;
  }
  double rate_at(std::int64_t k) const { return plateau_rate(base_at(k), lr_scale, min_lr); }
};

// The options' class, compared by identity: cheaper than py::isinstance's
// type lookup, and the *Options classes are not meant to be subclassed.
template <class Options>
const Options* options_as(py::handle options) {
  static PyTypeObject* const type = reinterpret_cast<PyTypeObject*>(py::type::of<Options>().ptr());
  if (Py_TYPE(options.ptr()) != type) return nullptr;
  return &options.cast<const Options&>();
}

template <class... Options>
AnyOptions any_options(py::handle options, OptionsList<Options...>) {
  AnyOptions out;
  const bool found = ((options_as<Options>(options) ? (out = *options_as<Options>(options), true) : false) || ...);
  if (!found) throw py::type_error("options must be one of the gradstep._core *Options classes");
  return out;
}

// The extents of the slots of the optimizer whose options these are (any
// *Options object), or every slot the param's size (None).
template <class... Options>
SlotExtents extents_of(py::handle options, OptionsList<Options...>) {
  if (options.is_none()) return {};
  return std::visit(
      [](const auto& v) -> SlotExtents {
        using O = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<O, std::monostate>)
          return {};
        else
          return state_extents(v);
      },
      any_options(options, AllOptions{}));
}

std::string shape_text(const std::vector<py::ssize_t>& shape) {
  std::string out = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + (shape.size() == 1 ? ",)" : ")");
}

class PyTensorSet {
 public:
  // declared_by: options of the optimizer (any *Options), whose declared
  // slot extents size the states (None: each the param's size; then the set
  // steps only optimizers whose states all are). shapes: the params' shapes
  // when the params given are flat views of them (gradstep.torch), for the
  // matrix shape (batch, rows, cols) of each; None: each param's own shape.
  // grad_dtypes: per param, the dtype its grads will have when not its own
  // (None: the param's; a f32, bf16 or f16 param takes f32, bf16 or f16
  // grads). masters: per param None, or a float32 array of its shape, the
  // master copy of a bf16/f16 param. Full-size states of a bf16/f16 param
  // are float32 or its own dtype (one for all of them).
  PyTensorSet(const py::sequence& params, const std::vector<std::optional<py::sequence>>& states,
              const std::vector<std::string>& state_names, py::handle declared_by,
              const std::optional<std::vector<std::vector<py::ssize_t>>>& shapes,
              const std::optional<py::sequence>& grad_dtypes, const std::optional<py::sequence>& masters) {
    const SlotExtents extents = extents_of(declared_by, AllOptions{});
    if (states.size() > static_cast<std::size_t>(kMaxStates) || state_names.size() != states.size())
      throw py::value_error("states: at most " + std::to_string(kMaxStates) + " state lists, each with a name");
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
      std::vector<py::ssize_t> shape(p.shape(), p.shape() + p.ndim());
      if (shapes) {
        if (shapes->size() != n)
          throw py::value_error("shapes: got " + std::to_string(shapes->size()) + " for " + std::to_string(n) +
                                " params");
        shape = (*shapes)[i];
        py::ssize_t count = 1;
        for (py::ssize_t d : shape) count = d < 0 ? -1 : count * d;
        if (count != p.size())
          throw py::value_error("shapes[" + std::to_string(i) + "]: " + shape_text(shape) + " does not hold the " +
                                std::to_string(p.size()) + " elements of " + what);
      }
      if (shape.size() >= 2 && views[i].size > 0) {  // a matrix, or a batch of them: the last two dims
        views[i].rows = static_cast<std::size_t>(shape[shape.size() - 2]);
        views[i].cols = static_cast<std::size_t>(shape.back());
        views[i].batch = views[i].size / (views[i].rows * views[i].cols);
      }
      shapes_.push_back(std::move(shape));
      Layout grad_layout = layout_of(p);
      grad_dtypes_.push_back(p.dtype());
      if (grad_dtypes && grad_dtypes->size() != n)
        throw py::value_error("grad_dtypes: got " + std::to_string(grad_dtypes->size()) + " for " +
                              std::to_string(n) + " params");
      if (grad_dtypes && !(*grad_dtypes)[i].is_none()) {
        const std::string gwhat = indexed("grad_dtypes", i);
        py::dtype gd = py::dtype::from_args((*grad_dtypes)[i]);
        const std::optional<DType> known = dtype_of(gd);
        if (!known)
          throw py::type_error(gwhat + ": must be float32, float64, float16 or bfloat16, got " +
                               std::string(py::str(gd)));
        views[i].grad_dtype = *known;
        grad_layout.type_num = py::detail::array_descriptor_proxy(gd.ptr())->type_num;
        grad_dtypes_.back() = gd;
      }
      layouts_.push_back(std::move(grad_layout));
      params_.push_back(p);
      hold(obj, std::move(p), what);
    }
    if (masters) {
      if (masters->size() != n)
        throw py::value_error("masters: got " + std::to_string(masters->size()) + " for " + std::to_string(n) +
                              " params");
      for (std::size_t i = 0; i < n; ++i) {
        py::object obj = (*masters)[i];
        if (obj.is_none()) continue;
        const std::string what = indexed("masters", i);
        py::array a = view_array(obj, what, Use::written);
        if (check_buffer(a, what, true) != DType::f32)
          throw py::type_error(what + ": a master copy must be float32, got " + std::string(py::str(a.dtype())));
        check_same_shape(a, params_[i], what, indexed("params", i));
        views[i].master = static_cast<float*>(a.mutable_data());
        hold(obj, std::move(a), what);
      }
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
        const DType dtype = check_buffer(a, what, true);
        const bool half_param = views[i].dtype == DType::bf16 || views[i].dtype == DType::f16;
        if (extents.slot[s].extent == Extent::full) {
          if (half_param && dtype == DType::f32) {
            check_same_shape(a, params_[i], what, indexed("params", i));
          } else {
            check_same_layout(a, params_[i], what, indexed("params", i));
          }
          // One dtype for a param's full-size states.
          if (views[i].state_dtype == DType::same)
            views[i].state_dtype = dtype;
          else if (views[i].state_dtype != dtype)
            throw py::type_error(what + ": dtype " + std::string(py::str(a.dtype())) + " differs from the " +
                                 "other states of " + indexed("params", i));
        } else {
          // Another extent than the param's: its element count is what matters.
          const std::size_t expected = slot_size(extents.slot[s], views[i]);
          const bool f32 = a.dtype().equal(py::dtype::of<float>());
          if (half_param ? !f32 : !a.dtype().equal(params_[i].dtype()))
            throw py::type_error(what + ": dtype " + std::string(py::str(a.dtype())) + " differs from " +
                                 (half_param ? std::string("float32 (the dtype of a state of another extent "
                                                           "than its bfloat16/float16 param's)")
                                             : indexed("params", i) + "'s " +
                                                   std::string(py::str(params_[i].dtype()))));
          if (static_cast<std::size_t>(a.size()) != expected)
            throw py::value_error(what + ": " + std::to_string(a.size()) + " elements, expected " +
                                  std::to_string(expected) + " (extent '" + extent_name(extents.slot[s].extent) +
                                  "' of " + indexed("params", i) + ", shape " + shape_text(shapes_[i]) + ")");
        }
        views[i].state[s] = a.mutable_data();
        hold(obj, std::move(a), what);
      }
    }
    // A half param without full-size states: those of other extents are float32.
    for (TensorView& v : views)
      if (v.state_dtype == DType::same && (v.dtype == DType::bf16 || v.dtype == DType::f16))
        v.state_dtype = DType::f32;
    try {
      set_ = std::make_unique<TensorSet>(views.data(), n, mask, extents);
    } catch (const std::invalid_argument& e) {
      throw py::value_error(e.what());
    }
    mask_ = mask;
    extents_ = extents;
  }

  std::size_t size() const { return params_.size(); }

  // ---- settings: set when they change, read back by the Python optimizer ----

  // Every option but lr is validated and kept (lr is the set's rate, below).
  void set_options(py::handle options) {
    last_options_ = py::object();
    AnyOptions o = any_options(options, AllOptions{});
    std::visit(
        [&](auto& v) {
          using O = std::decay_t<decltype(v)>;
          if constexpr (!std::is_same_v<O, std::monostate>) {
            v.lr = 0.0;  // not this set's rate: that is set_lr's or set_schedule's
            validate(v);
            if ((state_mask(v) & ~mask_) != 0)
              throw py::value_error("these options need state buffers the tensor set was built without");
            check_extents(v, "these options");
          }
        },
        o);
    settings_->options = o;
  }
  void set_lr(double rate, py::object source) {
    check_bound("lr", Bound::nonneg, rate);
    Settings& s = *settings_;
    s.base_lr = rate;
    s.schedule = nullptr;
    s.schedule_holder = py::none();
    s.source = source.is_none() ? py::object(py::float_(rate)) : source;
    s.have_rate = true;
  }
  void set_schedule(py::object schedule, py::object source) {
    Settings& s = *settings_;
    s.schedule = &schedule.cast<const Schedule&>();
    s.schedule_holder = schedule;
    s.source = source.is_none() ? schedule : source;
    s.have_rate = true;
  }
  void set_plateau(double scale, double min_lr) {
    plateau_rate(0.0, scale, min_lr);  // validates both
    settings_->lr_scale = scale;
    settings_->min_lr = min_lr;
  }
  void set_safeguards(bool skip_nonfinite, double max_grad_norm) {
    if (!(max_grad_norm >= 0.0) || std::isinf(max_grad_norm))
      throw py::value_error("max_grad_norm must be a finite number >= 0 (0 = no clipping)");
    settings_->control.skip_nonfinite = skip_nonfinite;
    settings_->control.max_grad_norm = max_grad_norm;
  }
  void set_rounding(const std::string& mode, std::uint64_t seed) {
    if (mode != "nearest" && mode != "stochastic")
      throw py::value_error("rounding must be 'nearest' or 'stochastic', got '" + mode + "'");
    settings_->control.rounding = mode == "nearest" ? Rounding::nearest : Rounding::stochastic;
    settings_->control.seed = seed;
  }
  // This set steps with other's settings from now on (the same object: a
  // change through either is seen by both).
  void share_settings(const PyTensorSet& other) {
    std::visit(
        [&](const auto& v) {
          using O = std::decay_t<decltype(v)>;
          if constexpr (!std::is_same_v<O, std::monostate>)
            if ((state_mask(v) & ~mask_) != 0)
              throw py::value_error("the other set's options need state buffers this set was built without");
          if constexpr (!std::is_same_v<O, std::monostate>) check_extents(v, "the other set's options");
        },
        other.settings_->options);
    settings_ = other.settings_;
  }
  const Settings& settings() const { return *settings_; }
  py::object options() const {
    return std::visit(
        [&](const auto& v) -> py::object {
          using O = std::decay_t<decltype(v)>;
          if constexpr (std::is_same_v<O, std::monostate>) {
            return py::none();
          } else {
            O copy = v;
            copy.lr = settings_->last_lr;
            return py::cast(copy);
          }
        },
        settings_->options);
  }

  // `step` is 1-based: one update with the set's options at the rate of
  // update step - 1. Returns (found_inf, skipped, grad_norm or None, the rate used).
  py::tuple step(py::handle grads, std::int64_t step) {
    return std::visit(
        [&](const auto& v) -> py::tuple {
          using O = std::decay_t<decltype(v)>;
          if constexpr (std::is_same_v<O, std::monostate>)
            throw py::value_error("no options set: call set_options first");
          else
            return run(grads, v, step);
        },
        settings_->options);
  }

  // One update of a set spanning param groups whose options differ
  // (TensorSet::step_groups; gradstep.torch's learning-rate-free adapters):
  // the set's options are the step's (its carried values, the options the
  // reference reads from its first group, the set's rate), `groups` one
  // options object per group (each with its own lr), group_of[t] the group
  // of params[t]. Returns as step().
  // The checks step() makes of grads (their count, dtypes and layouts, no
  // overlap with a buffer the step writes), without stepping: a caller that
  // steps several sets (gradstep.torch: one per param group or batch) checks
  // every set's grads before it steps any, so bad grads in the last set
  // leave the first ones unchanged too.
  void check_grads(py::handle grads) {
    Stepping stepping(this);
    Grads g = take_grads(grads);
    check_held();
    std::lock_guard<std::mutex> lock(mutex_);
    set_->set_grads(g.ptrs.data());
  }

  py::tuple step_groups(py::handle grads, std::int64_t step, const py::sequence& groups,
                        const std::vector<std::uint32_t>& group_of) {
    return std::visit(
        [&](const auto& v) -> py::tuple {
          using O = std::decay_t<decltype(v)>;
          if constexpr (std::is_same_v<O, std::monostate>) {
            throw py::value_error("no options set: call set_options first");
          } else {
            if (step < 1) throw py::value_error("step must be >= 1 (the 1-based number of this update)");
            if (group_of.size() != params_.size()) throw py::value_error("group_of: one group index per param");
            std::vector<O> options;
            for (py::handle h : groups) {
              if (!py::isinstance<O>(h)) throw py::type_error("groups: every group's options must be the set's type");
              options.push_back(h.cast<O>());
            }
            Stepping stepping(this);
            Grads g = take_grads(grads);
            check_held();
            O scheduled = v;
            scheduled.lr = settings_->rate_at(step - 1);
            const StepControl control = settings_->control;
            StepReport report;
            {
              py::gil_scoped_release release;  // reads and writes only buffers held here and by `g`
              std::lock_guard<std::mutex> lock(mutex_);
              set_->set_grads(g.ptrs.data());
              report = set_->step_groups(scheduled, options.data(), options.size(), group_of.data(), step, control);
            }
            if (!report.skipped) {
              settings_->last_lr = scheduled.lr;
              O& kept = std::get<O>(settings_->options);
              kept = with_carried(kept, report);
            }
            return py::make_tuple(report.found_inf, report.skipped,
                                  report.grad_norm < 0 ? py::object(py::none()) : py::float_(report.grad_norm),
                                  scheduled.lr);
          }
        },
        settings_->options);
  }

 private:
  // The states were sized for the extents these options declare.
  template <class Options>
  void check_extents(const Options& o, const char* whose) const {
    const SlotExtents e = state_extents(o);
    const unsigned used = state_mask(o);
    for (int k = 0; k < kMaxStates; ++k)
      if ((used & (1u << k)) &&
          (e.slot[k].extent != extents_.slot[k].extent || e.slot[k].stride != extents_.slot[k].stride))
        throw py::value_error(std::string(whose) + " size state '" + Declaration<Options>::slots[k].name +
                              "' by extent '" + extent_name(e.slot[k].extent) + "' (stride " +
                              std::to_string(e.slot[k].stride) + "); the tensor set was built for '" +
                              extent_name(extents_.slot[k].extent) + "' (stride " +
                              std::to_string(extents_.slot[k].stride) + ")");
  }

  template <class Options>
  py::tuple run(py::handle grads, const Options& options, std::int64_t step) {
    if (step < 1) throw py::value_error("step must be >= 1 (the 1-based number of this update)");
    Stepping stepping(this);
    Grads g = take_grads(grads);
    check_held();
    return run_with(g, options, step);
  }

  template <class Options>
  py::tuple run_with(const Grads& g, const Options& options, std::int64_t step) {
    Options scheduled = options;
    scheduled.lr = settings_->rate_at(step - 1);
    const StepControl control = settings_->control;
    StepReport report;
    {
      // The step reads and writes only buffers this object keeps alive (and
      // the grads held by `g`), so Python may run meanwhile.
      py::gil_scoped_release release;
      // One step at a time per set: a second thread waits instead of racing.
      std::lock_guard<std::mutex> lock(mutex_);
      set_->set_grads(g.ptrs.data());
      report = set_->step(scheduled, step, control);
    }
    if (!report.skipped) {
      settings_->last_lr = scheduled.lr;
      // The carried values (Prodigy's d, ...) go into the options of the next step.
      Options& kept = std::get<Options>(settings_->options);
      kept = with_carried(kept, report);
    }
    return py::make_tuple(report.found_inf, report.skipped,
                          report.grad_norm < 0 ? py::object(py::none()) : py::float_(report.grad_norm),
                          scheduled.lr);
  }


 public:
  // One update with grads the caller has checked and keeps alive (`keep`):
  // gradstep.torch's steady state, which checks the torch tensors behind
  // these buffers itself (TorchGroup) and so skips take_grads and
  // check_held. `options` and `rate` replace the set's (the torch group's
  // hyperparameters, evaluated for this step).
  bool grads_acceptable(const std::vector<const void*>& ptrs) {
    if (ptrs.size() != params_.size()) return false;
    std::lock_guard<std::mutex> lock(mutex_);
    try {
      set_->set_grads(ptrs.data());  // the step sets them again
    } catch (const std::invalid_argument&) {
      return false;
    }
    return true;
  }

  void step_checked(std::vector<const void*> ptrs, py::object keep, py::handle options, double rate,
                    std::int64_t step) {
    if (step < 1) throw py::value_error("step must be >= 1 (the 1-based number of this update)");
    if (ptrs.size() != params_.size()) throw py::value_error("step_checked: one grad per param");
    if (!options.is(last_options_)) {
      set_options(options);
      last_options_ = py::reinterpret_borrow<py::object>(options);
    }
    set_lr(rate, py::none());
    Stepping stepping(this);
    Grads g;
    g.ptrs = std::move(ptrs);
    g.held = std::move(keep);
    std::visit(
        [&](const auto& v) {
          using O = std::decay_t<decltype(v)>;
          if constexpr (!std::is_same_v<O, std::monostate>) run_with(g, v, step);
        },
        settings_->options);
  }

  // step_groups with grads the caller has checked and keeps alive (as
  // step_checked): the set's options, replaced by `options` at `rate`.
  void step_groups_checked(std::vector<const void*> ptrs, py::object keep, py::handle options, double rate,
                           std::int64_t step, const py::sequence& groups, const std::vector<std::uint32_t>& group_of) {
    if (step < 1) throw py::value_error("step must be >= 1 (the 1-based number of this update)");
    if (ptrs.size() != params_.size()) throw py::value_error("step_groups_checked: one grad per param");
    if (group_of.size() != params_.size()) throw py::value_error("group_of: one group index per param");
    if (!options.is(last_options_)) {
      set_options(options);
      last_options_ = py::reinterpret_borrow<py::object>(options);
    }
    set_lr(rate, py::none());
    std::visit(
        [&](const auto& v) {
          using O = std::decay_t<decltype(v)>;
          if constexpr (!std::is_same_v<O, std::monostate>) {
            std::vector<O> per_group;
            for (py::handle h : groups) {
              if (!py::isinstance<O>(h)) throw py::type_error("groups: every group's options must be the set's type");
              per_group.push_back(h.cast<O>());
            }
            for (std::uint32_t gi : group_of)
              if (gi >= per_group.size()) throw py::value_error("group_of: a group index out of range");
            Stepping stepping(this);
            O scheduled = v;
            scheduled.lr = settings_->rate_at(step - 1);
            const StepControl control = settings_->control;
            StepReport report;
            {
              py::gil_scoped_release release;  // reads and writes only buffers held here and by `keep`
              std::lock_guard<std::mutex> lock(mutex_);
              set_->set_grads(ptrs.data());
              report = set_->step_groups(scheduled, per_group.data(), per_group.size(), group_of.data(), step,
                                         control);
            }
            if (!report.skipped) {
              settings_->last_lr = scheduled.lr;
              O& kept = std::get<O>(settings_->options);
              kept = with_carried(kept, report);
            }
          }
        },
        settings_->options);
  }

  // The pass of the optimizer's Mode (Schedule-Free's train() / eval()):
  // every param moved into mode `on` unless it is there already; the kept
  // options record the mode from then on.
  void switch_mode(bool on) {
    check_held();
    std::visit(
        [&](const auto& v) {
          using O = std::decay_t<decltype(v)>;
          if constexpr (std::is_same_v<O, std::monostate>) {
            throw py::value_error("no options set: call set_options first");
          } else {
            const O given = v;
            O after;
            {
              py::gil_scoped_release release;  // touches only the params and states held here
              std::lock_guard<std::mutex> lock(mutex_);
              after = set_->switch_mode(given, on);
            }
            std::get<O>(settings_->options) = after;
          }
        },
        settings_->options);
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
        if (!a.dtype().equal(grad_dtypes_[i])) {
          const bool own = grad_dtypes_[i].equal(params_[i].dtype());
          throw py::type_error(indexed("grads", i) + ": dtype " + std::string(py::str(a.dtype())) +
                               " differs from " +
                               (own ? indexed("params", i) + "'s " : std::string("the grads' dtype it was built for, ")) +
                               std::string(py::str(grad_dtypes_[i])));
        }
        check_same_shape(a, params_[i], indexed("grads", i), indexed("params", i));
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
  std::vector<Layout> layouts_;       // what each param's grad must look like
  std::vector<py::dtype> grad_dtypes_;
  std::vector<HeldBuffer> held_;  // params, then states
  std::vector<std::string> names_;
  std::vector<std::size_t> tensor_held_;  // indices into held_ backed by a torch tensor
  std::vector<std::vector<py::ssize_t>> shapes_;  // the params' (logical) shapes
  std::unique_ptr<TensorSet> set_;
  unsigned mask_ = 0;
  SlotExtents extents_;
  std::shared_ptr<Settings> settings_ = std::make_shared<Settings>();
  py::object last_options_;  // what step_checked last passed to set_options
  std::mutex mutex_;
};

}  // namespace

void step_checked(py::handle tensor_set, std::vector<const void*> ptrs, py::object keep, py::handle options,
                  double rate, std::int64_t step) {
  tensor_set.cast<PyTensorSet&>().step_checked(std::move(ptrs), std::move(keep), options, rate, step);
}

void step_groups_checked(py::handle tensor_set, std::vector<const void*> ptrs, py::object keep, py::handle options,
                         double rate, std::int64_t step, const py::sequence& groups,
                         const std::vector<std::uint32_t>& group_of) {
  tensor_set.cast<PyTensorSet&>().step_groups_checked(std::move(ptrs), std::move(keep), options, rate, step, groups,
                                                      group_of);
}

bool grads_acceptable(py::handle tensor_set, const std::vector<const void*>& ptrs) {
  return tensor_set.cast<PyTensorSet&>().grads_acceptable(ptrs);
}

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
                   const std::vector<std::string>&, py::handle,
                   const std::optional<std::vector<std::vector<py::ssize_t>>>&, const std::optional<py::sequence>&,
                   const std::optional<py::sequence>&>(),
          py::arg("params"), py::arg("states"), py::arg("state_names"), py::arg("declared_by") = py::none(),
          py::arg("shapes") = py::none(), py::arg("grad_dtypes") = py::none(), py::arg("masters") = py::none(),
          "declared_by: options whose declaration sizes the states (slot extents; None: each the\n"
          "param's size). shapes: the params' shapes when flat views of them are given.\n"
          "grad_dtypes: per param, its grads' dtype when not its own (None). masters: per param,\n"
          "None or the float32 master copy of a bfloat16/float16 param.")
      .def("__len__", &PyTensorSet::size);
  // Positional arguments only on the hot path: pybind11's keyword matching
  // costs more than the whole kernel for a small tensor.
  cls.def("step", &PyTensorSet::step, py::arg("grads"), py::arg("step"),
          "One update (step: 1-based) with the set's options at its rate; returns\n"
          "(found_inf, skipped, grad_norm or None, lr). Pass arguments by position.");
  cls.def("check_grads", &PyTensorSet::check_grads, py::arg("grads"),
          "Check grads as step() would, without stepping (gradstep.torch checks every group's first).");
  cls.def("step_groups", &PyTensorSet::step_groups, py::arg("grads"), py::arg("step"), py::arg("groups"),
          py::arg("group_of"),
          "One update over param groups whose options differ (Prodigy, DAdaptAdam): params[t] with\n"
          "groups[group_of[t]] where the kernel reads per-group options, the set's options elsewhere.");
  cls.def("set_options", &PyTensorSet::set_options, py::arg("options"),
          "Validate and keep every option but lr (the set owns the rate: set_lr / set_schedule).");
  cls.def("set_lr", &PyTensorSet::set_lr, py::arg("rate"), py::arg("source") = py::none(),
          "A constant base rate; `source` is what lr_source reports (default: the rate).");
  cls.def("set_schedule", &PyTensorSet::set_schedule, py::arg("schedule"), py::arg("source") = py::none(),
          "A schedule as the base rate, evaluated in C++ at each step.");
  cls.def("set_plateau", &PyTensorSet::set_plateau, py::arg("scale"), py::arg("min_lr"),
          "ReduceLROnPlateau's scaling: the rate used is plateau_rate(base, scale, min_lr).");
  cls.def("set_safeguards", &PyTensorSet::set_safeguards, py::arg("skip_nonfinite"), py::arg("max_grad_norm"),
          "skip_nonfinite and max_grad_norm (0 = no clipping) of every step.");
  cls.def("set_rounding", &PyTensorSet::set_rounding, py::arg("mode"), py::arg("seed"),
          "How bfloat16/float16 params are stored: 'nearest' or 'stochastic' (bits keyed by\n"
          "(seed, step, tensor, element)).");
  cls.def_property_readonly("rounding", [](const PyTensorSet& s) {
    return s.settings().control.rounding == Rounding::nearest ? "nearest" : "stochastic";
  });
  cls.def_property_readonly("seed", [](const PyTensorSet& s) { return s.settings().control.seed; });
  cls.def("share_settings", &PyTensorSet::share_settings, py::arg("other"),
          "Step with other's options, rate and safeguards (the same settings, shared).");
  cls.def(
      "lr_at", [](const PyTensorSet& s, std::int64_t k) { return s.settings().rate_at(k); }, py::arg("k"),
      "The rate update k (0-based) would use: base rate or schedule at k, plateau scaling applied.");
  cls.def(
      "base_lr_at", [](const PyTensorSet& s, std::int64_t k) { return s.settings().base_at(k); },
      py::arg("k"), "The base rate or schedule at update k (0-based), before plateau scaling.");
  cls.def_property_readonly("lr_source", [](const PyTensorSet& s) { return s.settings().source; },
                            "The rate as last given to set_lr / set_schedule.");
  cls.def_property_readonly("lr_scale", [](const PyTensorSet& s) { return s.settings().lr_scale; });
  cls.def_property_readonly("min_lr", [](const PyTensorSet& s) { return s.settings().min_lr; });
  cls.def_property_readonly("skip_nonfinite",
                            [](const PyTensorSet& s) { return s.settings().control.skip_nonfinite; });
  cls.def_property_readonly("max_grad_norm",
                            [](const PyTensorSet& s) { return s.settings().control.max_grad_norm; });
  cls.def_property_readonly("options", &PyTensorSet::options,
                            "A copy of the options (lr: the rate of the last step), or None.");
  cls.def("switch_mode", &PyTensorSet::switch_mode, py::arg("on"),
          "The optimizer's mode switch (Schedule-Free: True = train(), False = eval()): one pass\n"
          "moving every param, unless the options are in that mode already.");
  cls.def("stream", &PyTensorSet::stream, py::arg("grads"),
          "Bandwidth probe: stream this set's buffers like a step, with no optimizer math.\n"
          "Overwrites params and states; `gradstep bench` times it as the memory roof.");
}

}  // namespace gradstep::bindings

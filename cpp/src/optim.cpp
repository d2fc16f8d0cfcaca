// The ISA-independent half of every step: validate options and buffers, cut
// the work into chunks, and run the active target's kernel over them.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <iterator>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "dispatch.hpp"
#include "gradstep/optim.hpp"
#include "tensor_set.hpp"
#include "threading.hpp"

namespace gradstep {
namespace {

[[noreturn]] void fail(const char* name, const char* rule, double value) {
  char buf[256];
  std::snprintf(buf, sizeof buf, "%s must be %s, got %.17g", name, rule, value);
  throw std::invalid_argument(buf);
}

// The smallest step, in elements, that is shared with the thread pool; below
// it the step runs on the calling thread, because handing blocks to another
// core costs more than it saves. Each declaration gives its own (the cheaper
// an optimizer's element, the larger), measured on a 2-core Zen3 with
// bench/threshold.py, which needs a build with -DGRADSTEP_PARALLEL_MIN=0 (one
// threshold for all) to see both sides.
template <class Options>
constexpr std::size_t parallel_min() {
#ifdef GRADSTEP_PARALLEL_MIN
  return GRADSTEP_PARALLEL_MIN;
#else
  return Declaration<Options>::parallel_min;
#endif
}
constexpr std::size_t kParallelMinStream = parallel_min<SgdOptions>();

std::size_t item_size(DType d) { return d == DType::f64 ? 8 : d == DType::f32 ? 4 : 2; }
bool is_half(DType d) { return d == DType::bf16 || d == DType::f16; }
// A grad's bytes (its dtype may differ from the param's).
std::size_t grad_bytes(const TensorView& v) { return v.size * item_size(v.grad_dtype); }

// The dtype rules of TensorView, with `same` resolved: nullptr if v obeys them.
const char* dtype_error(TensorView& v) {
  if (v.dtype != DType::f32 && v.dtype != DType::f64 && !is_half(v.dtype)) return "unknown dtype";
  if (v.grad_dtype == DType::same) v.grad_dtype = v.dtype;
  if (v.state_dtype == DType::same) v.state_dtype = v.dtype;
  if (v.grad_dtype != v.dtype && !(v.dtype != DType::f64 && (v.grad_dtype == DType::f32 || is_half(v.grad_dtype))))
    return "grad dtype: a f64 param takes f64 grads; a f32, bf16 or f16 param takes f32, bf16 or f16 grads";
  if (v.state_dtype != v.dtype && !(is_half(v.dtype) && v.state_dtype == DType::f32))
    return "state dtype: the param's dtype, or f32 for a bf16 or f16 param";
  if (v.master != nullptr && !is_half(v.dtype)) return "a master copy is for bf16 or f16 params only";
  return nullptr;
}

std::string tensor_error(std::size_t t, const char* what) {
  return "tensor " + std::to_string(t) + ": " + what;
}

using detail::Span;
using detail::TensorSetImpl;

}  // namespace

const char* bound_rule(Bound bound) {
  switch (bound) {
    case Bound::nonneg: return "a finite number >= 0";
    case Bound::unit_closed: return "in [0, 1]";
    case Bound::unit_open: return "in [0, 1)";
    case Bound::positive: return "a finite number > 0";
    case Bound::positive_or_inf: return "a number > 0 (inf allowed)";
    case Bound::finite: return "a finite number";
    case Bound::count: return "a whole number >= 0";
    case Bound::nonpos: return "a finite number <= 0";
    case Bound::at_least_one: return "a finite number >= 1";
    case Bound::any: break;
  }
  return "any value";
}

namespace {
bool within(Bound bound, double value) {
  switch (bound) {
    case Bound::any: return true;
    case Bound::nonneg: return std::isfinite(value) && value >= 0.0;
    case Bound::unit_closed: return std::isfinite(value) && value >= 0.0 && value <= 1.0;
    case Bound::unit_open: return std::isfinite(value) && value >= 0.0 && value < 1.0;
    case Bound::positive: return std::isfinite(value) && value > 0.0;
    case Bound::positive_or_inf: return value > 0.0;  // NaN fails
    case Bound::finite: return std::isfinite(value);
    case Bound::count: return std::isfinite(value) && value >= 0.0 && value == std::floor(value);
    case Bound::nonpos: return std::isfinite(value) && value <= 0.0;
    case Bound::at_least_one: return std::isfinite(value) && value >= 1.0;
  }
  return false;
}
}  // namespace

void check_bound(const char* name, Bound bound, double value) {
  if (!within(bound, value)) fail(name, bound_rule(bound), value);
}

namespace {

// A field that allows None holds the value standing for it (NaN stands for NaN).
template <class F>
bool stands_for_none(const F& f, double value) {
  return std::isnan(f.none_value) ? std::isnan(value) : value == f.none_value;
}

// The fields, then the cross-field rules, of an optimizer's declaration.
template <class Options>
void validate_declared(const Options& o) {
  using D = Declaration<Options>;
  const char* group = nullptr;
  int index = 0;  // place of a grouped field in its group
  for (const auto& f : D::fields) {
    const bool same_group = f.group != nullptr && group != nullptr && std::strcmp(f.group, group) == 0;
    index = same_group ? index + 1 : 0;
    group = f.group;
    if (f.real == nullptr || within(f.bound, o.*f.real) || (f.none_allowed && stands_for_none(f, o.*f.real))) continue;
    const std::string name = f.group ? std::string(f.group) + "[" + std::to_string(index) + "]" : f.name;
    fail(name.c_str(), bound_rule(f.bound), o.*f.real);
  }
  for (const auto& c : D::checks) {
    if (c.when != nullptr && !(o.*c.when)) continue;
    const bool refused = c.positive == nullptr && c.zero == nullptr && c.one == nullptr;
    if (refused || (c.positive != nullptr && !(o.*c.positive > 0.0)) || (c.zero != nullptr && o.*c.zero != 0.0) ||
        (c.one != nullptr && o.*c.one != 1.0))
      throw std::invalid_argument(c.message);
  }
}

template <class Options>
unsigned declared_state_mask(const Options& o) {
  unsigned mask = 0, bit = 1;
  for (const auto& s : Declaration<Options>::slots) {
    const bool needed = s.if_nonzero != nullptr ? o.*s.if_nonzero != 0.0
                        : s.if_set != nullptr   ? o.*s.if_set
                                                : true;
    if (needed) mask |= bit;
    bit <<= 1;
  }
  return mask;
}

template <class Options>
SlotExtents declared_state_extents(const Options& o) {
  SlotExtents out;
  int k = 0;
  for (const auto& s : Declaration<Options>::slots) {
    out.slot[k].extent = s.extent;
    // A stride that is no whole number >= 1 is the options' error (validate()); here it is 0.
    if (s.extent == Extent::strided) {
      const double v = o.*s.stride;
      out.slot[k].stride = v >= 1.0 && v < 9.0e15 && v == std::floor(v) ? std::size_t(v) : 0;
      // Every element (Prodigy's default slice_p = 1) is the param's size: a set built
      // without extents (the default, all full) steps it, as before slots had extents.
      if (out.slot[k].stride == 1) out.slot[k].extent = Extent::full;
    }
    ++k;
  }
  return out;
}

bool is_matrix(const TensorView& v) { return v.rows != 0; }

}  // namespace

std::size_t slot_size(const SlotExtent& e, const TensorView& v) {
  switch (e.extent) {
    case Extent::full: return v.size;
    case Extent::rows: return is_matrix(v) ? v.batch * v.rows : 0;
    case Extent::cols: return is_matrix(v) ? v.batch * v.cols : 0;
    case Extent::vector: return is_matrix(v) ? 0 : v.size;
    case Extent::strided:
      if (e.stride == 0) throw std::invalid_argument("a strided state's stride must be a whole number >= 1");
      return v.size / e.stride + (v.size % e.stride != 0 ? 1 : 0);
  }
  return v.size;
}

#define GRADSTEP_DETAIL_DEFINE_CHECKS(O)                             \
  void validate(const O& o) { validate_declared(o); }                \
  unsigned state_mask(const O& o) { return declared_state_mask(o); } \
  SlotExtents state_extents(const O& o) { return declared_state_extents(o); }
GRADSTEP_OPTIMIZERS(GRADSTEP_DETAIL_DEFINE_CHECKS)
#undef GRADSTEP_DETAIL_DEFINE_CHECKS

TensorSet::TensorSet(const TensorView* tensors, std::size_t count, unsigned slot_mask, const SlotExtents& extents) {
  if (count > 0 && tensors == nullptr) throw std::invalid_argument("tensors is null");
  for (int k = 0; k < kMaxStates; ++k)
    if ((slot_mask & (1u << k)) && extents.slot[k].extent == Extent::strided && extents.slot[k].stride == 0)
      throw std::invalid_argument("state slot " + std::to_string(k) + ": a strided extent needs a stride >= 1");
  impl_ = std::make_unique<TensorSetImpl>(tensors, count, slot_mask, extents);
  TensorSetImpl& s = *impl_;
  struct Owned {
    Span span;
    std::size_t tensor;
  };
  std::vector<Owned> owned;
  for (std::size_t t = 0; t < count; ++t) {
    TensorView& v = s.tensors[t];
    if (const char* e = dtype_error(v)) throw std::invalid_argument(tensor_error(t, e));
    if (v.rows == 0 ? (v.batch != 0 || v.cols != 0)
                    : (v.batch == 0 || v.cols == 0 || v.size % v.batch != 0 || (v.size / v.batch) % v.rows != 0 ||
                       v.size / v.batch / v.rows != v.cols))
      throw std::invalid_argument(tensor_error(t, "matrix shape (batch, rows, cols) does not hold size elements"));
    if (v.size == 0) continue;
    auto add = [&](const void* p, std::size_t elements, DType dtype, const char* what) {
      if (p == nullptr) throw std::invalid_argument(tensor_error(t, what));
      const char* c = static_cast<const char*>(p);
      owned.push_back({{c, c + elements * item_size(dtype)}, t});
    };
    add(v.param, v.size, v.dtype, "param is null");
    if (v.master != nullptr) add(v.master, v.size, DType::f32, "master is null");
    for (int k = 0; k < kMaxStates; ++k) {
      if (!(slot_mask & (1u << k))) {
        // Not the set's: no step reads it (check_options), and the staging of
        // half states must not take it for one.
        v.state[k] = nullptr;
        continue;
      }
      const bool full = extents.slot[k].extent == Extent::full;
      // A state of another extent is not staged chunk by chunk (kernels
      // read rows and columns across chunks): float32 for half params.
      if (!full && is_half(v.state_dtype))
        throw std::invalid_argument(tensor_error(t, "state dtype: a state of another extent than the "
                                                    "param's (rows, columns, strided) must be f32"));
      const DType state = full ? v.state_dtype : is_half(v.dtype) ? DType::f32 : v.dtype;
      if (full && is_half(state) && slot_size(extents.slot[k], v) != 0) s.half_states = true;
      const std::size_t n = slot_size(extents.slot[k], v);  // each state by its own size
      if (n != 0) add(v.state[k], n, state, "a state buffer the optimizer needs is null");
    }
  }
  std::sort(owned.begin(), owned.end(),
            [](const Owned& a, const Owned& b) { return a.span.lo < b.span.lo; });
  for (std::size_t i = 1; i < owned.size(); ++i)
    if (owned[i].span.lo < owned[i - 1].span.hi)
      throw std::invalid_argument("buffers of tensor " + std::to_string(owned[i - 1].tensor) +
                                  " and tensor " + std::to_string(owned[i].tensor) +
                                  " overlap (a param or state aliases another)");
  s.written.reserve(owned.size());
  for (const Owned& o : owned) s.written.push_back(o.span);
  std::vector<const void*> grads(count);
  bool have_grads = true;
  for (std::size_t t = 0; t < count; ++t) {
    grads[t] = s.tensors[t].grad;
    have_grads = have_grads && (grads[t] != nullptr || s.tensors[t].size == 0);
  }
  // Grads given here are checked like any others; none counts as checked yet.
  for (TensorView& v : s.tensors) v.grad = nullptr;
  if (have_grads) set_grads(grads.data());
}

TensorSet::TensorSet(const TensorSet& other)
    : impl_(other.impl_ ? std::make_unique<TensorSetImpl>(*other.impl_) : nullptr) {}
TensorSet::TensorSet(TensorSet&&) noexcept = default;
TensorSet& TensorSet::operator=(const TensorSet& other) {
  if (this != &other) *this = TensorSet(other);
  return *this;
}
TensorSet& TensorSet::operator=(TensorSet&&) noexcept = default;
TensorSet::~TensorSet() = default;

std::size_t TensorSet::size() const { return impl_ ? impl_->tensors.size() : 0; }
const TensorView& TensorSet::operator[](std::size_t i) const { return impl_->tensors[i]; }

namespace {
TensorSetImpl& live(const std::unique_ptr<TensorSetImpl>& impl) {
  if (!impl) throw std::logic_error("this TensorSet was moved from");
  return *impl;
}
}  // namespace

void TensorSet::set_grads(const void* const* grads) {
  TensorSetImpl& s = live(impl_);
  for (std::size_t t = 0; t < s.tensors.size(); ++t) {
    if (s.tensors[t].size == 0 || grads[t] == s.tensors[t].grad) continue;  // checked when set
    const char* lo = static_cast<const char*>(grads[t]);
    if (lo == nullptr) throw std::invalid_argument(tensor_error(t, "grad is null"));
    const char* hi = lo + grad_bytes(s.tensors[t]);
    // The last written span starting before hi is the only one that can overlap.
    auto it = std::lower_bound(s.written.begin(), s.written.end(), hi,
                               [](const Span& w, const char* p) { return w.lo < p; });
    if (it != s.written.begin() && std::prev(it)->hi > lo)
      throw std::invalid_argument(tensor_error(t, "grad overlaps a param or state buffer"));
  }
  for (std::size_t t = 0; t < s.tensors.size(); ++t) s.tensors[t].grad = grads[t];
  s.have_grads = true;
}

namespace {
// -1 makes every kernel ascend (maximize); the bandwidth probe has no sign.
template <class Options>
double grad_sign(const Options& o) {
  return o.maximize ? -1.0 : 1.0;
}
double grad_sign(const detail::StreamOptions&) { return 1.0; }

// The kernel table's entry for an optimizer.
template <class Options>
constexpr detail::StepFn<Options> detail::KernelTable::*kernel_of();
#define GRADSTEP_DETAIL_KERNEL_OF(O)                                  \
  template <>                                                         \
  constexpr detail::StepFn<O> detail::KernelTable::*kernel_of<O>() { \
    return &detail::KernelTable::O##_kernel;                          \
  }
GRADSTEP_OPTIMIZERS(GRADSTEP_DETAIL_KERNEL_OF)
#undef GRADSTEP_DETAIL_KERNEL_OF

// The checks every step makes, and the gradient pass when `control` asks for
// it. False: the step is skipped (a non-finite gradient with skip_nonfinite),
// and nothing may be written.
template <class Options>
bool prepare(const TensorSetImpl& s, const Options& o, std::int64_t step, const StepControl& control,
             std::size_t min_parallel, detail::Job& job, StepReport& report) {
  if (step < 1) throw std::invalid_argument("step must be >= 1 (the 1-based number of this update)");
  if (!(control.max_grad_norm >= 0.0) || std::isinf(control.max_grad_norm))
    fail("max_grad_norm", "a finite number >= 0 (0 = no clipping)", control.max_grad_norm);
  if (!s.have_grads) throw std::invalid_argument("no gradients set: call set_grads first");
  if (control.rounding != Rounding::nearest && control.rounding != Rounding::stochastic)
    throw std::invalid_argument("rounding must be nearest or stochastic");
  job = detail::Job{s.tensors.data(), s.plan.chunks.data(), step, grad_sign(o)};
  job.rounding = control.rounding;
  job.seed = control.seed;
  job.tensor_count = s.tensors.size();
  if (control.skip_nonfinite || control.max_grad_norm > 0.0) {
    // A pass over the gradients alone, before anything is written, so that a
    // non-finite step can leave every buffer as it was.
    std::vector<detail::GradStats> stats(s.plan.chunks.size());
    const auto stats_kernel = detail::kernels().grad_stats;
    detail::parallel_chunks(s.plan, min_parallel, [&](std::size_t first, std::size_t last) {
      stats_kernel(job, first, last, stats.data());
    });
    double sum_squares = 0.0, nonfinite = 0.0;
    for (const detail::GradStats& chunk : stats) {  // chunk order: independent of threading
      sum_squares += chunk.sum_squares;
      nonfinite += chunk.nonfinite;
    }
    report.grad_norm = std::sqrt(sum_squares);
    report.found_inf = std::isnan(nonfinite);
    if (report.found_inf && control.skip_nonfinite) {
      report.skipped = true;
      return false;
    }
    if (control.max_grad_norm > 0.0) {
      // torch: clamp(max_norm / (norm + 1e-6), max=1); a NaN norm stays NaN.
      double coeff = control.max_grad_norm / (report.grad_norm + 1e-6);
      if (coeff > 1.0) coeff = 1.0;
      job.grad_scale *= coeff;
    }
  }
  return true;
}

void run_passes(const detail::Passes& passes, void (*fn)(void*, std::size_t, std::size_t), void* ctx) {
  detail::run_plan(*static_cast<const detail::WorkPlan*>(passes.plan), passes.min_parallel, fn, ctx);
}

// How many sums per chunk an optimizer's step reduces (Declaration::partial_sums, 0 if absent).
template <class D, class = void>
struct PartialSums : std::integral_constant<std::size_t, 0> {};
template <class D>
struct PartialSums<D, std::void_t<decltype(D::partial_sums)>>
    : std::integral_constant<std::size_t, std::size_t(D::partial_sums)> {};

template <class Options>
StepReport run_step(const TensorSetImpl& s, const Options& o, std::int64_t step, const StepControl& control,
                    const Options* groups = nullptr, const std::uint32_t* group_of = nullptr) {
  using D = Declaration<Options>;
  StepReport report;
  std::size_t carried = 0;  // a skipped step (or a kernel that keeps one) reports them as given
  for (const auto& f : D::fields)
    if (f.kind == Kind::carried) report.carried[carried++] = f.real != nullptr ? o.*f.real : double(o.*f.flag);
  detail::Job job{};
  if (!prepare(s, o, step, control, parallel_min<Options>(), job, report)) return report;
  job.group_options = groups;
  job.group_of = groups != nullptr ? group_of : nullptr;
  constexpr std::size_t sums = PartialSums<D>::value;
  std::vector<double> partials(s.plan.chunks.size() * sums), per_tensor(s.tensors.size() * sums);
  const detail::Passes passes{&run_passes,
                              &s.plan,
                              parallel_min<Options>(),
                              s.plan.chunks.size(),
                              s.tensors.size(),
                              sums != 0 ? partials.data() : nullptr,
                              sums,
                              sums != 0 ? per_tensor.data() : nullptr};
  (detail::kernels().*kernel_of<Options>())(o, job, passes, report);
  return report;
}

// Whether an optimizer's kernel reads per-group options (Declaration::group_options, false if absent).
template <class D, class = void>
struct GroupOptions : std::false_type {};
template <class D>
struct GroupOptions<D, std::void_t<decltype(D::group_options)>> : std::bool_constant<D::group_options> {};

// Options checks shared by every optimizer's step and mode switch.
template <class Options>
void check_options(const Options& o, const TensorSetImpl& s) {
  validate(o);
  const unsigned mask = state_mask(o);
  if ((mask & ~s.slot_mask) != 0)
    throw std::invalid_argument("these options need state buffers the tensor set was built without");
  const SlotExtents e = state_extents(o);
  for (int k = 0; k < kMaxStates; ++k)
    if ((mask & (1u << k)) &&
        (e.slot[k].extent != s.extents.slot[k].extent || e.slot[k].stride != s.extents.slot[k].stride))
      throw std::invalid_argument("state slot " + std::to_string(k) + " (" + Declaration<Options>::slots[k].name +
                                  "): the tensor set was built for another extent than these options declare");
}

template <class Options>
void check_step_options(const Options& o, const TensorSetImpl& s) {
  check_options(o, s);
  // A step that reduces between passes reads its states in a later pass; kept
  // in bf16/f16 they would be rounded for that pass and not for the sums.
  if (PartialSums<Declaration<Options>>::value != 0 && s.half_states)
    throw std::invalid_argument(std::string(Declaration<Options>::name) +
                                " reduces over its states between passes: they must be f32 for bf16/f16 params");
  if constexpr (HasMode<Options>::value) {
    constexpr Mode<Options> mode = Declaration<Options>::mode;
    if (!(o.*mode.flag)) throw std::logic_error(mode.step_refused);
  }
}

// The kernel table's mode switch for an optimizer.
template <class Options>
constexpr detail::SwitchFn<Options> detail::KernelTable::*switch_of();
#define GRADSTEP_DETAIL_SWITCH_OF(O)                                    \
  template <>                                                           \
  constexpr detail::SwitchFn<O> detail::KernelTable::*switch_of<O>() { \
    return &detail::KernelTable::O##_switch;                            \
  }
GRADSTEP_OPTIMIZERS(GRADSTEP_DETAIL_SWITCH_OF)
#undef GRADSTEP_DETAIL_SWITCH_OF

template <class Options>
Options run_switch(const TensorSetImpl& s, Options o, bool on) {
  if constexpr (!HasMode<Options>::value) {
    throw std::logic_error(std::string(Declaration<Options>::name) + " has no modes to switch between");
  } else {
    constexpr Mode<Options> mode = Declaration<Options>::mode;
    if (o.*mode.flag == on) return o;
    // Only params and states are touched: no grads, no step number.
    // Half params are rounded to nearest here (a switch has no StepControl).
    detail::Job job{s.tensors.data(), s.plan.chunks.data(), 0, 1.0};
    job.tensor_count = s.tensors.size();
    const detail::Passes passes{&run_passes,      &s.plan, parallel_min<Options>(), s.plan.chunks.size(),
                                s.tensors.size(), nullptr, 0};
    (detail::kernels().*switch_of<Options>())(o, on, job, passes);
    o.*mode.flag = on;
    return o;
  }
}
}  // namespace

#define GRADSTEP_DETAIL_DEFINE_STEP(O)                                                 \
  StepReport TensorSet::step(const O& o, std::int64_t k, const StepControl& c) const { \
    const TensorSetImpl& s = live(impl_);                                              \
    check_step_options(o, s);                                                \
    return run_step(s, o, k, c);                                                       \
  }
GRADSTEP_OPTIMIZERS(GRADSTEP_DETAIL_DEFINE_STEP)
#undef GRADSTEP_DETAIL_DEFINE_STEP

namespace {
template <class Options>
StepReport run_step_groups(const TensorSetImpl& s, const Options& o, const Options* groups, std::size_t count,
                           const std::uint32_t* group_of, std::int64_t step, const StepControl& control) {
  if constexpr (!GroupOptions<Declaration<Options>>::value) {
    throw std::logic_error(std::string(Declaration<Options>::name) +
                           " has no per-group options: step every group with one options struct");
  } else {
    check_step_options(o, s);
    if (count == 0 || groups == nullptr || group_of == nullptr)
      throw std::invalid_argument("step_groups: no groups given");
    for (std::size_t g = 0; g < count; ++g) {
      try {
        check_step_options(groups[g], s);
      } catch (const std::invalid_argument& e) {
        throw std::invalid_argument("group " + std::to_string(g) + ": " + e.what());
      }
      if (groups[g].maximize != o.maximize) throw std::invalid_argument("group " + std::to_string(g) + ": maximize differs");
    }
    for (std::size_t t = 0; t < s.tensors.size(); ++t)
      if (group_of[t] >= count)
        throw std::invalid_argument(tensor_error(t, "its group index is out of range"));
    return run_step(s, o, step, control, groups, group_of);
  }
}
}  // namespace

#define GRADSTEP_DETAIL_DEFINE_STEP_GROUPS(O)                                                             \
  StepReport TensorSet::step_groups(const O& o, const O* groups, std::size_t count,                      \
                                    const std::uint32_t* group_of, std::int64_t k, const StepControl& c) \
      const {                                                                                             \
    return run_step_groups(live(impl_), o, groups, count, group_of, k, c);                               \
  }
GRADSTEP_OPTIMIZERS(GRADSTEP_DETAIL_DEFINE_STEP_GROUPS)
#undef GRADSTEP_DETAIL_DEFINE_STEP_GROUPS
#define GRADSTEP_DETAIL_DEFINE_SWITCH(O)                    \
  O TensorSet::switch_mode(const O& o, bool on) const {    \
    const TensorSetImpl& s = live(impl_);                   \
    check_options(o, s);                          \
    return run_switch(s, o, on);                            \
  }
GRADSTEP_OPTIMIZERS(GRADSTEP_DETAIL_DEFINE_SWITCH)
#undef GRADSTEP_DETAIL_DEFINE_SWITCH
void TensorSet::stream() const {
  const TensorSetImpl& s = live(impl_);
  // The probe streams states of the param's size only.
  unsigned full = 0;
  for (int k = 0; k < kMaxStates; ++k)
    if (s.extents.slot[k].extent == Extent::full) full |= 1u << k;
  const detail::StreamOptions probe{s.slot_mask & full};
  detail::Job job{};
  StepReport report;
  prepare(s, probe, 1, StepControl{}, kParallelMinStream, job, report);
  const auto kernel = detail::kernels().stream;
  detail::parallel_chunks(s.plan, kParallelMinStream,
                          [&](std::size_t first, std::size_t last) { kernel(probe, job, first, last); });
}

}  // namespace gradstep

// Learning-rate schedules: a small tree of typed nodes, evaluated in closed
// form at any step. Plain C++, no Python.
//
// Steps are 0-based: update k (the k-th call to an optimizer's step, counting
// from 0) uses the rate schedule(k). Where torch.optim.lr_scheduler has the
// schedule, schedule(k) is torch's get_last_lr() after k scheduler steps.
//
// Each kind is one struct in gradstep::schedules: its fields (with the
// defaults of gradstep.schedules, which takes them from here), the rule each
// field must satisfy, listed once in fields() (validation, serialization
// and the Python factories all walk that list, in its order), and its closed
// form at(k) (in cpp/src/schedule.cpp). Build a schedule from any kind:
//
//   using namespace gradstep::schedules;
//   gradstep::Schedule s = Warmup{Cosine{1e-3, 10000, 1e-5}, 500};
//
// Building validates the node and throws std::invalid_argument naming the
// first offending field (with the Python API's parameter names).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

namespace gradstep {

class Schedule;

namespace schedules {

// ---- field lists ----------------------------------------------------------

// A field's rule: throws std::invalid_argument naming the field if `value`
// is not allowed. nullptr: any value.
template <class T>
using Rule = void (*)(const char* name, const T& value);

template <class T>
struct NoDeduce {
  using type = T;
};

template <class Kind, class T>
struct Field {
  const char* name;  // as in gradstep.schedules (and in to_dict)
  T Kind::*member;
  Rule<T> rule;
  bool required;  // false: the member's initializer is the default, everywhere
  void check(const Kind& kind) const {
    if (rule) rule(name, kind.*member);
  }
};
template <class Kind, class T>
constexpr Field<Kind, T> required(const char* name, T Kind::*member, typename NoDeduce<Rule<T>>::type rule) {
  return {name, member, rule, true};
}
template <class Kind, class T>
constexpr Field<Kind, T> defaulted(const char* name, T Kind::*member, typename NoDeduce<Rule<T>>::type rule) {
  return {name, member, rule, false};
}

// Modes: enums whose names (the strings gradstep.schedules takes) are listed
// by Choices<E>::names, in the enum's order.
enum class CyclicMode : std::uint8_t { triangular, triangular2, exp_range };
enum class Anneal : std::uint8_t { cos, linear };
template <class E>
struct Choices;
template <>
struct Choices<CyclicMode> {
  static constexpr const char* names[] = {"triangular", "triangular2", "exp_range"};
};
template <>
struct Choices<Anneal> {
  static constexpr const char* names[] = {"cos", "linear"};
};
template <class E>
constexpr std::size_t choice_count = sizeof(Choices<E>::names) / sizeof(Choices<E>::names[0]);
template <class E>
const char* choice_name(E value) {
  const auto i = static_cast<std::size_t>(value);
  return i < choice_count<E> ? Choices<E>::names[i] : "?";
}
[[noreturn]] void bad_choice(const char* field, const std::string& text, const char* const* names, std::size_t n);
// The enum value named `text`; throws std::invalid_argument naming `field`
// and listing the names.
template <class E>
E parse_choice(const char* field, const std::string& text) {
  for (std::size_t i = 0; i < choice_count<E>; ++i)
    if (text == Choices<E>::names[i]) return static_cast<E>(i);
  bad_choice(field, text, Choices<E>::names, choice_count<E>);
}

// The rules (messages name the field and the value).
namespace rules {
void finite(const char* name, const double& v);    // finite
void nonneg(const char* name, const double& v);    // finite and >= 0
void positive(const char* name, const double& v);  // finite and > 0
void open_unit(const char* name, const double& v); // in (0, 1)
void require_at_least(const char* name, std::int64_t v, std::int64_t least);
template <std::int64_t Least>
void at_least(const char* name, const std::int64_t& v) {
  require_at_least(name, v, Least);
}
template <std::int64_t Least>
void at_least_if_given(const char* name, const std::optional<std::int64_t>& v) {
  if (v) require_at_least(name, *v, Least);
}
void sorted(const char* name, const std::vector<std::int64_t>& v);      // >= 0, non-decreasing
void increasing(const char* name, const std::vector<std::int64_t>& v);  // >= 0, strictly increasing
void each_nonneg(const char* name, const std::vector<double>& v);
template <class E>
void known(const char* name, const E& v) {
  if (static_cast<std::size_t>(v) >= choice_count<E>)
    bad_choice(name, std::to_string(static_cast<int>(v)), Choices<E>::names, choice_count<E>);
}
void not_empty(const char* name, const Schedule& v);
void not_empty(const char* name, const std::vector<Schedule>& v);
}  // namespace rules

// ---- the kinds ------------------------------------------------------------

// The same rate at every step.
struct Constant {
  static constexpr const char* name = "constant";
  double lr;
  static constexpr auto fields() { return std::make_tuple(required("lr", &Constant::lr, rules::nonneg)); }
  double at(std::int64_t k) const;
};

// StepLR: lr * gamma^floor(k / step_size).
struct Step {
  static constexpr const char* name = "step";
  double lr;
  std::int64_t step_size;
  double gamma = 0.1;
  static constexpr auto fields() {
    return std::make_tuple(required("lr", &Step::lr, rules::nonneg),
                           required("step_size", &Step::step_size, rules::at_least<1>),
                           defaulted("gamma", &Step::gamma, rules::nonneg));
  }
  double at(std::int64_t k) const;
};

// MultiStepLR: lr * gamma^(number of milestones <= k); milestones
// non-decreasing (a repeated milestone applies gamma once per repeat, as in torch).
struct MultiStep {
  static constexpr const char* name = "multistep";
  double lr;
  std::vector<std::int64_t> milestones;
  double gamma = 0.1;
  static constexpr auto fields() {
    return std::make_tuple(required("lr", &MultiStep::lr, rules::nonneg),
                           required("milestones", &MultiStep::milestones, rules::sorted),
                           defaulted("gamma", &MultiStep::gamma, rules::nonneg));
  }
  double at(std::int64_t k) const;
};

// ExponentialLR: lr * gamma^k.
struct Exponential {
  static constexpr const char* name = "exponential";
  double lr;
  double gamma;
  static constexpr auto fields() {
    return std::make_tuple(required("lr", &Exponential::lr, rules::nonneg),
                           required("gamma", &Exponential::gamma, rules::nonneg));
  }
  double at(std::int64_t k) const;
};

// lr * e^(-rate k); gradstep.schedules.exponential(lr, rate=...).
struct ExponentialRate {
  static constexpr const char* name = "exponential";
  double lr;
  double rate;
  static constexpr auto fields() {
    return std::make_tuple(required("lr", &ExponentialRate::lr, rules::nonneg),
                           required("rate", &ExponentialRate::rate, rules::finite));
  }
  double at(std::int64_t k) const;
};

// lr * decay_rate^(k / decay_steps), the exponent floored when staircase.
struct ExponentialDecay {
  static constexpr const char* name = "exponential_decay";
  double lr;
  double decay_rate;
  std::int64_t decay_steps;
  bool staircase = false;
  static constexpr auto fields() {
    return std::make_tuple(required("lr", &ExponentialDecay::lr, rules::nonneg),
                           required("decay_rate", &ExponentialDecay::decay_rate, rules::nonneg),
                           required("decay_steps", &ExponentialDecay::decay_steps, rules::at_least<1>),
                           defaulted("staircase", &ExponentialDecay::staircase, nullptr));
  }
  double at(std::int64_t k) const;
};

// lr / (1 + decay_rate * k / decay_steps), the quotient floored when staircase.
struct InverseTime {
  static constexpr const char* name = "inverse_time";
  double lr;
  double decay_rate;
  std::int64_t decay_steps = 1;
  bool staircase = false;
  static constexpr auto fields() {
    return std::make_tuple(required("lr", &InverseTime::lr, rules::nonneg),
                           required("decay_rate", &InverseTime::decay_rate, rules::nonneg),
                           defaulted("decay_steps", &InverseTime::decay_steps, rules::at_least<1>),
                           defaulted("staircase", &InverseTime::staircase, nullptr));
  }
  double at(std::int64_t k) const;
};

// eta_0 = lr, eta_{n+1} = eta_n / (1 + decay n), in closed form.
struct TimeBased {
  static constexpr const char* name = "time_based";
  double lr;
  double decay;
  static constexpr auto fields() {
    return std::make_tuple(required("lr", &TimeBased::lr, rules::nonneg),
                           required("decay", &TimeBased::decay, rules::nonneg));
  }
  double at(std::int64_t k) const;
};

// PolynomialLR with an end value: (lr - end_lr)(1 - min(k, T)/T)^power + end_lr.
struct Polynomial {
  static constexpr const char* name = "polynomial";
  double lr;
  std::int64_t total_steps;
  double power = 1.0;
  double end_lr = 0.0;
  static constexpr auto fields() {
    return std::make_tuple(required("lr", &Polynomial::lr, rules::nonneg),
                           required("total_steps", &Polynomial::total_steps, rules::at_least<1>),
                           defaulted("power", &Polynomial::power, rules::nonneg),
                           defaulted("end_lr", &Polynomial::end_lr, rules::nonneg));
  }
  double at(std::int64_t k) const;
};

// start_lr + (end_lr - start_lr) min(k, T)/T.
struct Linear {
  static constexpr const char* name = "linear";
  double start_lr;
  double end_lr;
  std::int64_t total_steps;
  static constexpr auto fields() {
    return std::make_tuple(required("start_lr", &Linear::start_lr, rules::nonneg),
                           required("end_lr", &Linear::end_lr, rules::nonneg),
                           required("total_steps", &Linear::total_steps, rules::at_least<1>));
  }
  double at(std::int64_t k) const;
};

// CosineAnnealingLR: final_lr + (lr - final_lr)(1 + cos(pi k / T))/2 for every
// k, so past total_steps it rises again with period 2T, as torch's does.
struct Cosine {
  static constexpr const char* name = "cosine";
  double lr;
  std::int64_t total_steps;
  double final_lr = 0.0;
  static constexpr auto fields() {
    return std::make_tuple(required("lr", &Cosine::lr, rules::nonneg),
                           required("total_steps", &Cosine::total_steps, rules::at_least<1>),
                           defaulted("final_lr", &Cosine::final_lr, rules::nonneg));
  }
  double at(std::int64_t k) const;
};

// CosineAnnealingWarmRestarts (T_0 = period, T_mult = period_mult).
struct CosineRestarts {
  static constexpr const char* name = "cosine_restarts";
  double lr;
  std::int64_t period;
  std::int64_t period_mult = 1;
  double final_lr = 0.0;
  static constexpr auto fields() {
    return std::make_tuple(required("lr", &CosineRestarts::lr, rules::nonneg),
                           required("period", &CosineRestarts::period, rules::at_least<1>),
                           defaulted("period_mult", &CosineRestarts::period_mult, rules::at_least<1>),
                           defaulted("final_lr", &CosineRestarts::final_lr, rules::nonneg));
  }
  double at(std::int64_t k) const;
};

// CyclicLR's rate. step_size_down unset means step_size_up (torch's None);
// building the schedule fills it in, so a built node always has it.
struct Cyclic {
  static constexpr const char* name = "cyclic";
  double base_lr;
  double max_lr;
  std::int64_t step_size_up = 2000;
  std::optional<std::int64_t> step_size_down = std::nullopt;
  CyclicMode mode = CyclicMode::triangular;
  double gamma = 1.0;
  static constexpr auto fields() {
    return std::make_tuple(required("base_lr", &Cyclic::base_lr, rules::nonneg),
                           required("max_lr", &Cyclic::max_lr, rules::nonneg),
                           defaulted("step_size_up", &Cyclic::step_size_up, rules::at_least<1>),
                           defaulted("step_size_down", &Cyclic::step_size_down, rules::at_least_if_given<1>),
                           defaulted("mode", &Cyclic::mode, rules::known<CyclicMode>),
                           defaulted("gamma", &Cyclic::gamma, rules::nonneg));
  }
  void resolve() {
    if (!step_size_down) step_size_down = step_size_up;
  }
  double at(std::int64_t k) const;
};

// OneCycleLR. Steps k >= total_steps - 1 keep the last rate,
// max_lr / (div_factor * final_div_factor).
struct OneCycle {
  static constexpr const char* name = "one_cycle";
  double max_lr;
  std::int64_t total_steps;
  double pct_start = 0.3;
  Anneal anneal_strategy = Anneal::cos;
  double div_factor = 25.0;
  double final_div_factor = 1e4;
  bool three_phase = false;
  static constexpr auto fields() {
    return std::make_tuple(required("max_lr", &OneCycle::max_lr, rules::nonneg),
                           required("total_steps", &OneCycle::total_steps, rules::at_least<2>),
                           defaulted("pct_start", &OneCycle::pct_start, rules::open_unit),
                           defaulted("anneal_strategy", &OneCycle::anneal_strategy, rules::known<Anneal>),
                           defaulted("div_factor", &OneCycle::div_factor, rules::positive),
                           defaulted("final_div_factor", &OneCycle::final_div_factor, rules::positive),
                           defaulted("three_phase", &OneCycle::three_phase, nullptr));
  }
  void check() const;  // every phase has steps
  double at(std::int64_t k) const;
};

// values[i] for boundaries[i-1] <= k < boundaries[i]; boundaries increasing.
struct PiecewiseConstant {
  static constexpr const char* name = "piecewise_constant";
  std::vector<std::int64_t> boundaries;
  std::vector<double> values;
  static constexpr auto fields() {
    return std::make_tuple(required("boundaries", &PiecewiseConstant::boundaries, rules::increasing),
                           required("values", &PiecewiseConstant::values, nullptr));
  }
  void check() const;  // one more value than boundaries, each >= 0
  double at(std::int64_t k) const;
};

}  // namespace schedules

// Composition limits: warmup and sequence each add one level of nesting
// over their children (a plain schedule is one level), and a schedule's
// size counts every node of its tree (a child used twice counts twice).
// Deeper or larger compositions are refused when built
// (std::invalid_argument), which bounds evaluation's recursion and a
// schedule's size.
inline constexpr std::size_t kMaxScheduleDepth = 64;
inline constexpr std::size_t kMaxScheduleNodes = 10000;

namespace schedules {
struct Warmup;
struct Sequence;
}  // namespace schedules

// One node: any kind.
using ScheduleNode =
    std::variant<schedules::Constant, schedules::Step, schedules::MultiStep, schedules::Exponential,
                 schedules::ExponentialRate, schedules::ExponentialDecay, schedules::InverseTime,
                 schedules::TimeBased, schedules::Polynomial, schedules::Linear, schedules::Cosine,
                 schedules::CosineRestarts, schedules::Cyclic, schedules::OneCycle, schedules::PiecewiseConstant,
                 schedules::Warmup, schedules::Sequence>;

namespace detail {
template <class T, class Variant>
struct is_alternative;
template <class T, class... Kinds>
struct is_alternative<T, std::variant<Kinds...>> : std::disjunction<std::is_same<T, Kinds>...> {};
}  // namespace detail

// An immutable schedule (copies share its nodes; safe to evaluate from any
// number of threads).
class Schedule {
 public:
  // An empty schedule: a placeholder, refused wherever a schedule is used.
  Schedule() = default;
  // Validates the node (std::invalid_argument naming the first bad field,
  // then the composition limits) and builds the schedule.
  explicit Schedule(ScheduleNode node);
  template <class Kind, class = std::enable_if_t<detail::is_alternative<Kind, ScheduleNode>::value>>
  Schedule(Kind kind);  // NOLINT: implicit, so kinds compose as values

  // The rate of update k; throws std::invalid_argument if k < 0, or if the
  // rate is not finite there (a growing schedule past the float64 range).
  // Every value lies in the range the schedule's formula allows.
  double operator()(std::int64_t k) const;
  // out[i] = (*this)(k[i]). Every k is checked before any out is written.
  void eval(const std::int64_t* k, double* out, std::size_t n) const;
  // The formula at k >= 0, unchecked (what composite kinds evaluate their
  // children with; it may be inf where operator() throws).
  double unchecked(std::int64_t k) const;

  bool empty() const;                         // default-constructed
  const ScheduleNode& node() const;           // the root (not of an empty schedule)
  const char* name() const;                   // the root's kind ("cosine", ...)
  std::size_t size() const { return size_; }  // nodes in the tree
  std::size_t depth() const { return depth_; }  // nesting levels

 private:
  std::shared_ptr<const ScheduleNode> node_;
  std::size_t size_ = 0, depth_ = 0;
};

namespace schedules {

// k < steps: start_lr + (schedule(0) - start_lr) k / steps; then schedule(k - steps).
struct Warmup {
  static constexpr const char* name = "warmup";
  Schedule schedule;
  std::int64_t steps;
  double start_lr = 0.0;
  static constexpr auto fields() {
    return std::make_tuple(required("schedule", &Warmup::schedule, rules::not_empty),
                           required("steps", &Warmup::steps, rules::at_least<0>),
                           defaulted("start_lr", &Warmup::start_lr, rules::nonneg));
  }
  double at(std::int64_t k) const;
};

// schedules[i] at k - boundaries[i-1] for boundaries[i-1] <= k < boundaries[i]
// (boundaries[-1] = 0); boundaries increasing, one fewer than schedules.
struct Sequence {
  static constexpr const char* name = "sequence";
  std::vector<Schedule> schedules;
  std::vector<std::int64_t> boundaries;
  static constexpr auto fields() {
    return std::make_tuple(required("schedules", &Sequence::schedules, rules::not_empty),
                           required("boundaries", &Sequence::boundaries, nullptr));
  }
  void check() const;  // one fewer boundary than schedules, increasing
  double at(std::int64_t k) const;
};

namespace detail {
template <class Kind, class = void>
struct has_check : std::false_type {};
template <class Kind>
struct has_check<Kind, std::void_t<decltype(std::declval<const Kind&>().check())>> : std::true_type {};
template <class Kind, class = void>
struct has_resolve : std::false_type {};
template <class Kind>
struct has_resolve<Kind, std::void_t<decltype(std::declval<Kind&>().resolve())>> : std::true_type {};
}  // namespace detail

// Each field's rule in the order of fields(), then what the kind checks
// across fields. Throws std::invalid_argument naming the first bad field.
template <class Kind>
void validate(const Kind& kind) {
  std::apply([&](const auto&... field) { (field.check(kind), ...); }, Kind::fields());
  if constexpr (detail::has_check<Kind>::value) kind.check();
}

// Fills in what a field's default leaves to the others (Cyclic's step_size_down).
template <class Kind>
void resolve(Kind& kind) {
  if constexpr (detail::has_resolve<Kind>::value) kind.resolve();
}

}  // namespace schedules

template <class Kind, class>
Schedule::Schedule(Kind kind) : Schedule(ScheduleNode(std::move(kind))) {}

// (Defined here: the node's type is complete only now.)
inline bool Schedule::empty() const { return node_ == nullptr; }
inline const ScheduleNode& Schedule::node() const { return *node_; }

// The rate after ReduceLROnPlateau-style scaling: max(scale * rate,
// min(rate, min_lr)). The scale never takes the rate below min_lr, and never
// lifts a schedule that is already below min_lr. Throws std::invalid_argument
// unless scale and min_lr are finite and >= 0.
double plateau_rate(double rate, double scale, double min_lr);

}  // namespace gradstep

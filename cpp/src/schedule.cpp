// Closed-form evaluation of learning-rate schedules: one section per kind
// (its closed form and what it checks across fields; its fields and their
// rules are in schedule.hpp), then building and evaluating a Schedule.
//
// Where torch.optim.lr_scheduler has a schedule, the arithmetic below is its
// formula written in the same order of operations (torch's closed form, or
// the expression its get_lr evaluates), so that values agree to the last few
// bits and never drift: torch's recursive updates accumulate one rounding per
// step, these do not.
#include "gradstep/schedule.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <stdexcept>
#include <string>
#include <utility>

namespace gradstep {
namespace {

constexpr double kPi = 3.141592653589793;  // == Python's math.pi

[[noreturn]] void fail(const std::string& message) { throw std::invalid_argument(message); }

std::string number(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

// Sorted step lists: `strict` forbids repeats.
void require_sorted(const char* name, const std::vector<std::int64_t>& v, bool strict) {
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (v[i] < 0)
      fail(std::string(name) + "[" + std::to_string(i) + "] must be >= 0, got " + std::to_string(v[i]));
    if (i > 0 && (strict ? v[i] <= v[i - 1] : v[i] < v[i - 1]))
      fail(std::string(name) + " must be " + (strict ? "strictly increasing" : "sorted (non-decreasing)") +
           ", got " + std::to_string(v[i - 1]) + " before " + std::to_string(v[i]));
  }
}

// Number of entries of the sorted list v that are <= k (Python's bisect_right).
std::size_t count_le(const std::vector<std::int64_t>& v, std::int64_t k) {
  return static_cast<std::size_t>(std::upper_bound(v.begin(), v.end(), k) - v.begin());
}

// (1 + cos(pi num / den)) / 2 for 0 <= num <= den, rest = den - num
// (computed exactly by the caller), without the cancellation of 1 + cos
// near num = den: it is cos^2 of half the angle, and past the middle sin^2
// of half the remaining angle.
double half_cos(double num, double rest, double den) {
  if (num <= rest) {
    const double c = std::cos(kPi * (num / den) / 2.0);
    return c * c;
  }
  const double s = std::sin(kPi * (rest / den) / 2.0);
  return s * s;
}

// v rounded into [min(a, b), max(a, b)]: an interpolation between a and b
// never leaves that interval mathematically, only by a rounding.
double clamp_between(double v, double a, double b) { return std::min(std::max(v, std::min(a, b)), std::max(a, b)); }

// lr * factor, with a zero rate staying zero when the factor overflows
// (0 * inf would be NaN; the limit is 0).
double scaled(double lr, double factor) { return lr == 0.0 ? 0.0 : lr * factor; }

// Stirling's series for log Gamma(z) minus its leading terms (z >= 32 here,
// where the first omitted term is below 1e-19).
double stirling_tail(double z) {
  const double r = 1.0 / z, r2 = r * r;
  return r * (1.0 / 12 - r2 * (1.0 / 360 - r2 * (1.0 / 1260 - r2 * (1.0 / 1680 - r2 / 1188))));
}

// log1p(u) - u, accurate where the difference cancels (small u): with
// s = u / (2 + u), log1p(u) = 2 atanh(s) = 2 (s + s^3/3 + s^5/5 + ...) and
// u - 2 s = u s, so log1p(u) - u = -u s + 2 (s^3/3 + s^5/5 + ...).
double log1p_minus(double u) {
  if (u >= 0.5) return std::log1p(u) - u;
  const double s = u / (2.0 + u), s2 = s * s;
  double term = s * s2, sum = 0.0;
  for (int j = 3; j < 41 && term != 0.0; j += 2) {
    sum += term / j;
    term *= s2;
  }
  return -u * s + 2.0 * sum;
}

// L = log prod_{i=0}^{k-1} (1 + d i) >= 0, the rate being lr e^(-L).
// - k d tiny (every factor's d i <= 1e-4): the series of log1p summed over i,
//   sum_p (-1)^(p+1) d^p S_p / p with S_p = sum_{i<k} i^p, four terms
//   (relative error below (k d)^4 / 15 < 1e-17); each term is formed from
//   products of k d so that nothing underflows before it is negligible, and
//   no 1/d is ever formed (d may be 1e-300 or subnormal).
// - 1/d < 32: k log d + lgamma(1/d + k) - lgamma(1/d).
// - otherwise that form loses absolute accuracy when 1/d is large
//   (lgamma(1e8) ~ 2e9), and the error is relative error in the rate.
//   Subtracting Stirling's expansions of the two lgammas analytically leaves
//     (1/d + k - 1/2) log1p(k d) - k + tail(1/d + k) - tail(1/d)
//   = (log1p(k d) - k d) / d + (k - 1/2) log1p(k d) + tail(1/d + k) - tail(1/d),
//   whose terms are no larger than k d (the first form would cancel two
//   terms of size k against each other).
double time_based_log_growth(double d, std::int64_t k) {
  if (k <= 1 || d == 0.0) return 0.0;
  const double n = static_cast<double>(k), u = n * d;
  double L;
  if (u <= 1e-4) {
    const double m1 = static_cast<double>(k - 1);
    const double t1 = u * m1 / 2.0;                                  // d S_1
    const double t2 = u * (d * m1) * (2.0 * n - 1.0) / 6.0;         // d^2 S_2
    const double t3 = t1 * t1 * d;                                   // d^3 S_3 (S_3 = S_1^2)
    const double t4 = t2 * (3.0 * u * u - 3.0 * u * d - d * d) / 5.0;  // d^4 S_4
    L = t1 - t2 / 2.0 + t3 / 3.0 - t4 / 4.0;
  } else {
    const double x = 1.0 / d;
    if (x < 32.0)
      L = n * std::log(d) + std::lgamma(x + n) - std::lgamma(x);
    else
      L = log1p_minus(u) * x + (n - 0.5) * std::log1p(u) + (stirling_tail(x + n) - stirling_tail(x));
  }
  return std::max(L, 0.0);  // every factor is >= 1
}

// CosineAnnealingWarmRestarts' position: T_cur within a cycle of length T_i,
// found by walking the geometric cycle lengths (at most 63 of them).
std::pair<double, double> restart_position(std::int64_t k, std::int64_t period, std::int64_t mult) {
  if (mult == 1) return {static_cast<double>(k % period), static_cast<double>(period)};
  std::int64_t start = 0, length = period;
  while (k - start >= length) {
    start += length;
    if (length > std::numeric_limits<std::int64_t>::max() / mult)  // next cycle outlasts int64 steps
      return {static_cast<double>(k - start), static_cast<double>(length) * static_cast<double>(mult)};
    length *= mult;
  }
  return {static_cast<double>(k - start), static_cast<double>(length)};
}

// OneCycleLR's phase boundaries, as torch computes them (floats, the first
// ones ending one step before pct_start * total_steps).
struct OneCyclePhases {
  double end[3];
  double start_lr[3], end_lr[3];
  int count;
};

OneCyclePhases one_cycle_phases(const schedules::OneCycle& s) {
  const double max_lr = s.max_lr, pct = s.pct_start, div = s.div_factor, final_div = s.final_div_factor;
  const std::int64_t total = s.total_steps;
  const double initial_lr = max_lr / div, min_lr = initial_lr / final_div;
  const double last = static_cast<double>(total - 1);
  if (s.three_phase) {
    return {{pct * static_cast<double>(total) - 1.0, 2.0 * pct * static_cast<double>(total) - 2.0, last},
            {initial_lr, max_lr, initial_lr},
            {max_lr, initial_lr, min_lr},
            3};
  }
  return {{pct * static_cast<double>(total) - 1.0, last, 0.0}, {initial_lr, max_lr, 0.0}, {max_lr, min_lr, 0.0}, 2};
}

}  // namespace

// ---- rules ------------------------------------------------------------------

namespace schedules {

void bad_choice(const char* field, const std::string& text, const char* const* names, std::size_t n) {
  std::string list;
  for (std::size_t i = 0; i < n; ++i) {
    if (i > 0) list += i + 1 == n ? " or " : ", ";
    list += std::string("'") + names[i] + "'";
  }
  fail(std::string(field) + " must be " + list + ", got '" + text + "'");
}

namespace rules {
void finite(const char* name, const double& v) {
  if (!std::isfinite(v)) fail(std::string(name) + " must be a finite number, got " + number(v));
}
void nonneg(const char* name, const double& v) {
  if (!std::isfinite(v) || v < 0.0) fail(std::string(name) + " must be a finite number >= 0, got " + number(v));
}
void positive(const char* name, const double& v) {
  if (!std::isfinite(v) || v <= 0.0) fail(std::string(name) + " must be a finite number > 0, got " + number(v));
}
void open_unit(const char* name, const double& v) {
  if (!(v > 0.0 && v < 1.0)) fail(std::string(name) + " must be in (0, 1), got " + number(v));
}
void require_at_least(const char* name, std::int64_t v, std::int64_t least) {
  if (v < least)
    fail(std::string(name) + " must be an integer >= " + std::to_string(least) + ", got " + std::to_string(v));
}
void sorted(const char* name, const std::vector<std::int64_t>& v) { require_sorted(name, v, false); }
void increasing(const char* name, const std::vector<std::int64_t>& v) { require_sorted(name, v, true); }
void each_nonneg(const char* name, const std::vector<double>& v) {
  for (std::size_t j = 0; j < v.size(); ++j) nonneg((std::string(name) + "[" + std::to_string(j) + "]").c_str(), v[j]);
}
void not_empty(const char* name, const Schedule& v) {
  if (v.empty()) fail(std::string(name) + " must not be an empty schedule");
}
void not_empty(const char* name, const std::vector<Schedule>& v) {
  if (v.empty()) fail(std::string(name) + " must not be empty");
  for (std::size_t j = 0; j < v.size(); ++j) not_empty((std::string(name) + "[" + std::to_string(j) + "]").c_str(), v[j]);
}
}  // namespace rules

// ---- the kinds ----------------------------------------------------------------

double Constant::at(std::int64_t) const { return lr; }

double Step::at(std::int64_t k) const { return scaled(lr, std::pow(gamma, static_cast<double>(k / step_size))); }

double MultiStep::at(std::int64_t k) const {
  return scaled(lr, std::pow(gamma, static_cast<double>(count_le(milestones, k))));
}

double Exponential::at(std::int64_t k) const { return scaled(lr, std::pow(gamma, static_cast<double>(k))); }

double ExponentialRate::at(std::int64_t k) const { return scaled(lr, std::exp(-rate * static_cast<double>(k))); }

double ExponentialDecay::at(std::int64_t k) const {
  const double t = staircase ? static_cast<double>(k / decay_steps)
                             : static_cast<double>(k) / static_cast<double>(decay_steps);
  return scaled(lr, std::pow(decay_rate, t));
}

double InverseTime::at(std::int64_t k) const {
  const double t = staircase ? static_cast<double>(k / decay_steps)
                             : static_cast<double>(k) / static_cast<double>(decay_steps);
  return lr / (1.0 + decay_rate * t);  // d t may overflow to inf: the rate's limit, 0
}

double TimeBased::at(std::int64_t k) const { return lr * std::exp(-time_based_log_growth(decay, k)); }

double Polynomial::at(std::int64_t k) const {
  // 1 - min(k, T) / T as (T - min(k, T)) / T: exact remaining steps, no
  // cancellation near the end however large T is.
  const double left =
      static_cast<double>(total_steps - std::min(k, total_steps)) / static_cast<double>(total_steps);
  return clamp_between((lr - end_lr) * std::pow(left, power) + end_lr, lr, end_lr);
}

double Linear::at(std::int64_t k) const {
  // Interpolated from the nearer end, with the exact remaining steps in the
  // second half: start_lr + (end_lr - start_lr) t / T would lose the last
  // steps' distance to end_lr when T is large.
  const std::int64_t t = std::min(k, total_steps), left = total_steps - t;
  const double T = static_cast<double>(total_steps);
  const double rate = t <= left ? start_lr + (end_lr - start_lr) * static_cast<double>(t) / T
                                : end_lr + (start_lr - end_lr) * static_cast<double>(left) / T;
  return clamp_between(rate, start_lr, end_lr);
}

double Cosine::at(std::int64_t k) const {
  // cos(pi k / T) has period 2T and is symmetric about T: fold k into m in
  // [0, T] in integers (2T could overflow), exact at any step.
  const std::int64_t q = k / total_steps, rem = k % total_steps;
  const std::int64_t m = q % 2 == 0 ? rem : total_steps - rem;
  const double c = half_cos(static_cast<double>(m), static_cast<double>(total_steps - m),
                            static_cast<double>(total_steps));
  return clamp_between(final_lr + (lr - final_lr) * c, lr, final_lr);
}

double CosineRestarts::at(std::int64_t k) const {
  const auto [t_cur, t_i] = restart_position(k, period, period_mult);
  return clamp_between(final_lr + (lr - final_lr) * half_cos(t_cur, t_i - t_cur, t_i), lr, final_lr);
}

double Cyclic::at(std::int64_t k) const {
  // torch's cycle = floor(1 + k / total) and x = 1 + k / total - cycle, in
  // integers: exact at any step (the sum fits in uint64).
  const std::uint64_t up = static_cast<std::uint64_t>(step_size_up);
  const std::uint64_t down = static_cast<std::uint64_t>(*step_size_down);  // set when built
  const std::uint64_t total = up + down, kk = static_cast<std::uint64_t>(k);
  const std::uint64_t cycle = kk / total + 1, pos = kk % total;
  const double scale_factor = pos <= up ? static_cast<double>(pos) / static_cast<double>(up)
                                        : static_cast<double>(total - pos) / static_cast<double>(down);
  const double base_height = (max_lr - base_lr) * scale_factor;
  if (base_height == 0.0) return base_lr;
  double scale = 1.0;
  if (mode == CyclicMode::triangular2)
    scale = std::ldexp(1.0, -static_cast<int>(std::min<std::uint64_t>(cycle - 1, 2000)));
  else if (mode == CyclicMode::exp_range)
    scale = std::pow(gamma, static_cast<double>(k));  // torch scales exp_range by iterations, not cycles
  const double rate = base_lr + base_height * scale;
  return scale <= 1.0 ? clamp_between(rate, base_lr, max_lr) : rate;
}

void OneCycle::check() const {
  // torch divides by each phase's length (0/0 for an empty one) and lets a
  // phase end before the previous one; require every phase to move forward.
  const OneCyclePhases p = one_cycle_phases(*this);
  double start = 0.0;
  for (int i = 0; i < p.count; ++i) {
    if (!(p.end[i] > start))
      fail("pct_start=" + number(pct_start) + " with total_steps=" + std::to_string(total_steps) +
           (three_phase ? " and three_phase" : "") + " leaves phase " + std::to_string(i + 1) +
           " of the cycle without steps (its end step " + number(p.end[i]) + " is not after " + number(start) +
           ")");
    start = p.end[i];
  }
}

double OneCycle::at(std::int64_t k) const {
  const OneCyclePhases p = one_cycle_phases(*this);
  // torch raises past total_steps, and at total_steps extrapolates the last
  // phase; no update of a total_steps-update run uses either, so hold the end.
  const double step = static_cast<double>(std::min(k, total_steps - 1));
  double start_step = 0.0;
  for (int i = 0; i < p.count; ++i) {
    if (step <= p.end[i] || i == p.count - 1) {
      const double start = p.start_lr[i], end = p.end_lr[i];
      const double done = step - start_step, length = p.end[i] - start_step;
      const double rate = anneal_strategy == Anneal::linear
                              ? (end - start) * (done / length) + start
                              : end + (start - end) * half_cos(std::min(done, length), std::max(p.end[i] - step, 0.0), length);
      return clamp_between(rate, start, end);
    }
    start_step = p.end[i];
  }
  return p.end_lr[p.count - 1];  // unreachable: the last phase always matches
}

void PiecewiseConstant::check() const {
  if (values.size() != boundaries.size() + 1)
    fail("values must have one more entry than boundaries, got " + std::to_string(values.size()) + " values for " +
         std::to_string(boundaries.size()) + " boundaries");
  rules::each_nonneg("values", values);
}

double PiecewiseConstant::at(std::int64_t k) const { return values[count_le(boundaries, k)]; }

double Warmup::at(std::int64_t k) const {
  if (k >= steps) return schedule.unchecked(k - steps);
  const double target = schedule.unchecked(0);
  return clamp_between(start_lr + (target - start_lr) * static_cast<double>(k) / static_cast<double>(steps), start_lr,
                       target);
}

void Sequence::check() const {
  if (boundaries.size() + 1 != schedules.size())
    fail("boundaries must have one fewer entry than schedules, got " + std::to_string(boundaries.size()) +
         " boundaries for " + std::to_string(schedules.size()) + " schedules");
  rules::increasing("boundaries", boundaries);
}

double Sequence::at(std::int64_t k) const {
  const std::size_t j = count_le(boundaries, k);
  return schedules[j].unchecked(j == 0 ? k : k - boundaries[j - 1]);
}

}  // namespace schedules

// ---- building ---------------------------------------------------------------

namespace {

// A node's children: warmup's schedule, sequence's schedules.
template <class Kind, class F>
void for_each_child(const Kind& kind, F&& f) {
  if constexpr (std::is_same_v<Kind, schedules::Warmup>) {
    f(kind.schedule);
  } else if constexpr (std::is_same_v<Kind, schedules::Sequence>) {
    for (const Schedule& child : kind.schedules) f(child);
  }
}

}  // namespace

// The one place the composition limits are enforced (from_dict refuses the
// same before it recurses, reading the limits from here).
Schedule::Schedule(ScheduleNode node) {
  std::size_t size = 1, depth = 1;
  std::visit(
      [&](auto& kind) {
        schedules::resolve(kind);
        schedules::validate(kind);
        for_each_child(kind, [&](const Schedule& child) {
          size += child.size();
          depth = std::max(depth, child.depth() + 1);
        });
      },
      node);
  if (size > kMaxScheduleNodes)
    fail("a schedule may have at most " + std::to_string(kMaxScheduleNodes) + " nodes, this one would have " +
         std::to_string(size));
  if (depth > kMaxScheduleDepth)
    fail("schedules nest at most " + std::to_string(kMaxScheduleDepth) +
         " levels deep (warmup and sequence each add one), this one would nest " + std::to_string(depth));
  node_ = std::make_shared<const ScheduleNode>(std::move(node));
  size_ = size;
  depth_ = depth;
}

const char* Schedule::name() const {
  if (empty()) return "";
  return std::visit([](const auto& kind) { return std::decay_t<decltype(kind)>::name; }, *node_);
}

// ---- evaluation -------------------------------------------------------------

double Schedule::unchecked(std::int64_t k) const {
  return std::visit([k](const auto& kind) { return kind.at(k); }, *node_);
}

namespace {

// A growing schedule (gamma > 1, a negative rate, exp_range with gamma > 1)
// can leave the float64 range; that is an error at the step that reaches it,
// never an infinite learning rate handed to a kernel.
double finite_at(const Schedule& s, std::int64_t k) {
  const double rate = s.unchecked(k);
  if (!std::isfinite(rate))
    fail("the schedule's rate at step " + std::to_string(k) + " is " + number(rate) +
         ": it grows past the float64 range there");
  return rate;
}

void require_built(const Schedule& s) {
  if (s.empty()) fail("the schedule is empty (a default-constructed Schedule has no rate)");
}

}  // namespace

double Schedule::operator()(std::int64_t k) const {
  require_built(*this);
  if (k < 0) fail("step must be an integer >= 0, got " + std::to_string(k));
  return finite_at(*this, k);
}

void Schedule::eval(const std::int64_t* k, double* out, std::size_t n) const {
  require_built(*this);
  for (std::size_t j = 0; j < n; ++j)
    if (k[j] < 0) fail("steps[" + std::to_string(j) + "] must be >= 0, got " + std::to_string(k[j]));
  for (std::size_t j = 0; j < n; ++j) out[j] = finite_at(*this, k[j]);
}

double plateau_rate(double rate, double scale, double min_lr) {
  schedules::rules::nonneg("lr_scale", scale);
  schedules::rules::nonneg("min_lr", min_lr);
  return std::max(scale * rate, std::min(rate, min_lr));
}

}  // namespace gradstep

// Closed-form evaluation of learning-rate schedules.
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

void require_finite(const char* name, double v) {
  if (!std::isfinite(v)) fail(std::string(name) + " must be a finite number, got " + number(v));
}
void require_nonneg(const char* name, double v) {
  if (!std::isfinite(v) || v < 0.0) fail(std::string(name) + " must be a finite number >= 0, got " + number(v));
}
void require_positive(const char* name, double v) {
  if (!std::isfinite(v) || v <= 0.0) fail(std::string(name) + " must be a finite number > 0, got " + number(v));
}
void require_at_least(const char* name, std::int64_t v, std::int64_t least) {
  if (v < least)
    fail(std::string(name) + " must be an integer >= " + std::to_string(least) + ", got " + std::to_string(v));
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

enum CyclicMode : std::int64_t { triangular, triangular2, exp_range };
enum Anneal : std::int64_t { anneal_cos, anneal_linear };

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

double cyclic_rate(const ScheduleNode& node, std::int64_t k) {
  const double base_lr = node.real[0], max_lr = node.real[1], gamma = node.real[2];
  // torch's cycle = floor(1 + k / total) and x = 1 + k / total - cycle, in
  // integers: exact at any step (the sum fits in uint64).
  const std::uint64_t up = static_cast<std::uint64_t>(node.integer[0]);
  const std::uint64_t down = static_cast<std::uint64_t>(node.integer[1]);
  const std::uint64_t total = up + down, kk = static_cast<std::uint64_t>(k);
  const std::uint64_t cycle = kk / total + 1, pos = kk % total;
  const double scale_factor = pos <= up ? static_cast<double>(pos) / static_cast<double>(up)
                                        : static_cast<double>(total - pos) / static_cast<double>(down);
  const double base_height = (max_lr - base_lr) * scale_factor;
  if (base_height == 0.0) return base_lr;
  double scale = 1.0;
  if (node.integer[2] == triangular2)
    scale = std::ldexp(1.0, -static_cast<int>(std::min<std::uint64_t>(cycle - 1, 2000)));
  else if (node.integer[2] == exp_range)
    scale = std::pow(gamma, static_cast<double>(k));  // torch scales exp_range by iterations, not cycles
  const double rate = base_lr + base_height * scale;
  return scale <= 1.0 ? clamp_between(rate, base_lr, max_lr) : rate;
}

// OneCycleLR's phase boundaries, as torch computes them (floats, the first
// ones ending one step before pct_start * total_steps).
struct OneCyclePhases {
  double end[3];
  double start_lr[3], end_lr[3];
  int count;
};

OneCyclePhases one_cycle_phases(const ScheduleNode& node) {
  const double max_lr = node.real[0], pct = node.real[1], div = node.real[2], final_div = node.real[3];
  const std::int64_t total = node.integer[0];
  const double initial_lr = max_lr / div, min_lr = initial_lr / final_div;
  const double last = static_cast<double>(total - 1);
  if (node.integer[2]) {
    return {{pct * static_cast<double>(total) - 1.0, 2.0 * pct * static_cast<double>(total) - 2.0, last},
            {initial_lr, max_lr, initial_lr},
            {max_lr, initial_lr, min_lr},
            3};
  }
  return {{pct * static_cast<double>(total) - 1.0, last, 0.0}, {initial_lr, max_lr, 0.0}, {max_lr, min_lr, 0.0}, 2};
}

double one_cycle_rate(const ScheduleNode& node, std::int64_t k) {
  const OneCyclePhases p = one_cycle_phases(node);
  // torch raises past total_steps, and at total_steps extrapolates the last
  // phase; no update of a total_steps-update run uses either, so hold the end.
  const double step = static_cast<double>(std::min(k, node.integer[0] - 1));
  double start_step = 0.0;
  for (int i = 0; i < p.count; ++i) {
    if (step <= p.end[i] || i == p.count - 1) {
      const double start = p.start_lr[i], end = p.end_lr[i];
      const double done = step - start_step, length = p.end[i] - start_step;
      const double rate = node.integer[1] == anneal_linear
                              ? (end - start) * (done / length) + start
                              : end + (start - end) * half_cos(std::min(done, length), std::max(p.end[i] - step, 0.0), length);
      return clamp_between(rate, start, end);
    }
    start_step = p.end[i];
  }
  return p.end_lr[p.count - 1];  // unreachable: the last phase always matches
}

}  // namespace

// ---- evaluation -----------------------------------------------------------

double Schedule::at(std::size_t index, std::int64_t k) const {
  const ScheduleNode& n = nodes_[index];
  const std::vector<double>& r = n.real;
  const std::vector<std::int64_t>& i = n.integer;
  const double kd = static_cast<double>(k);
  switch (n.kind) {
    case ScheduleKind::constant:
      return r[0];
    case ScheduleKind::step:
      return scaled(r[0], std::pow(r[1], static_cast<double>(k / i[0])));
    case ScheduleKind::multistep:
      return scaled(r[0], std::pow(r[1], static_cast<double>(count_le(i, k))));
    case ScheduleKind::exponential:
      return scaled(r[0], std::pow(r[1], kd));
    case ScheduleKind::exponential_rate:
      return scaled(r[0], std::exp(-r[1] * kd));
    case ScheduleKind::exponential_decay: {
      const double t = i[1] ? static_cast<double>(k / i[0]) : kd / static_cast<double>(i[0]);
      return scaled(r[0], std::pow(r[1], t));
    }
    case ScheduleKind::inverse_time: {
      const double t = i[1] ? static_cast<double>(k / i[0]) : kd / static_cast<double>(i[0]);
      return r[0] / (1.0 + r[1] * t);  // d t may overflow to inf: the rate's limit, 0
    }
    case ScheduleKind::time_based:
      return r[0] * std::exp(-time_based_log_growth(r[1], k));
    case ScheduleKind::polynomial: {
      // 1 - min(k, T) / T as (T - min(k, T)) / T: exact remaining steps, no
      // cancellation near the end however large T is.
      const double left = static_cast<double>(i[0] - std::min(k, i[0])) / static_cast<double>(i[0]);
      return clamp_between((r[0] - r[2]) * std::pow(left, r[1]) + r[2], r[0], r[2]);
    }
    case ScheduleKind::linear: {
      // Interpolated from the nearer end, with the exact remaining steps in
      // the second half: start_lr + (end_lr - start_lr) t / T would lose the
      // last steps' distance to end_lr when T is large.
      const std::int64_t t = std::min(k, i[0]), left = i[0] - t;
      const double T = static_cast<double>(i[0]);
      const double rate = t <= left ? r[0] + (r[1] - r[0]) * static_cast<double>(t) / T
                                    : r[1] + (r[0] - r[1]) * static_cast<double>(left) / T;
      return clamp_between(rate, r[0], r[1]);
    }
    case ScheduleKind::cosine: {
      // cos(pi k / T) has period 2T and is symmetric about T: fold k into
      // m in [0, T] in integers (2T could overflow), exact at any step.
      const std::int64_t q = k / i[0], rem = k % i[0];
      const std::int64_t m = q % 2 == 0 ? rem : i[0] - rem;
      const double c = half_cos(static_cast<double>(m), static_cast<double>(i[0] - m), static_cast<double>(i[0]));
      return clamp_between(r[1] + (r[0] - r[1]) * c, r[0], r[1]);
    }
    case ScheduleKind::cosine_restarts: {
      const auto [t_cur, t_i] = restart_position(k, i[0], i[1]);
      return clamp_between(r[1] + (r[0] - r[1]) * half_cos(t_cur, t_i - t_cur, t_i), r[0], r[1]);
    }
    case ScheduleKind::cyclic:
      return cyclic_rate(n, k);
    case ScheduleKind::one_cycle:
      return one_cycle_rate(n, k);
    case ScheduleKind::piecewise_constant:
      return r[count_le(i, k)];
    case ScheduleKind::warmup: {
      if (k >= i[0]) return at(n.children[0], k - i[0]);
      const double target = at(n.children[0], 0);
      return clamp_between(r[0] + (target - r[0]) * kd / static_cast<double>(i[0]), r[0], target);
    }
    case ScheduleKind::sequence: {
      const std::size_t j = count_le(i, k);
      return at(n.children[j], j == 0 ? k : k - i[j - 1]);
    }
  }
  throw std::logic_error("gradstep: unknown schedule node kind");
}

// A growing schedule (gamma > 1, a negative rate, exp_range with gamma > 1)
// can leave the float64 range; that is an error at the step that reaches it,
// never an infinite learning rate handed to a kernel.
double Schedule::finite_at(std::int64_t k) const {
  const double rate = at(nodes_.size() - 1, k);
  if (!std::isfinite(rate))
    fail("the schedule's rate at step " + std::to_string(k) + " is " + number(rate) +
         ": it grows past the float64 range there");
  return rate;
}

double Schedule::operator()(std::int64_t k) const {
  if (k < 0) fail("step must be an integer >= 0, got " + std::to_string(k));
  return finite_at(k);
}

void Schedule::eval(const std::int64_t* k, double* out, std::size_t n) const {
  for (std::size_t j = 0; j < n; ++j)
    if (k[j] < 0) fail("steps[" + std::to_string(j) + "] must be >= 0, got " + std::to_string(k[j]));
  for (std::size_t j = 0; j < n; ++j) out[j] = finite_at(k[j]);
}

double plateau_rate(double rate, double scale, double min_lr) {
  require_nonneg("lr_scale", scale);
  require_nonneg("min_lr", min_lr);
  return std::max(scale * rate, std::min(rate, min_lr));
}

// ---- construction ---------------------------------------------------------

Schedule Schedule::leaf(ScheduleNode node) {
  Schedule s;
  s.nodes_.push_back(std::move(node));
  return s;
}

Schedule Schedule::constant(double lr) {
  require_nonneg("lr", lr);
  return leaf({ScheduleKind::constant, {lr}, {}, {}});
}

Schedule Schedule::step(double lr, std::int64_t step_size, double gamma) {
  require_nonneg("lr", lr);
  require_at_least("step_size", step_size, 1);
  require_nonneg("gamma", gamma);
  return leaf({ScheduleKind::step, {lr, gamma}, {step_size}, {}});
}

Schedule Schedule::multistep(double lr, const std::vector<std::int64_t>& milestones, double gamma) {
  require_nonneg("lr", lr);
  require_sorted("milestones", milestones, false);
  require_nonneg("gamma", gamma);
  return leaf({ScheduleKind::multistep, {lr, gamma}, milestones, {}});
}

Schedule Schedule::exponential(double lr, double gamma) {
  require_nonneg("lr", lr);
  require_nonneg("gamma", gamma);
  return leaf({ScheduleKind::exponential, {lr, gamma}, {}, {}});
}

Schedule Schedule::exponential_rate(double lr, double rate) {
  require_nonneg("lr", lr);
  require_finite("rate", rate);
  return leaf({ScheduleKind::exponential_rate, {lr, rate}, {}, {}});
}

Schedule Schedule::exponential_decay(double lr, double decay_rate, std::int64_t decay_steps, bool staircase) {
  require_nonneg("lr", lr);
  require_nonneg("decay_rate", decay_rate);
  require_at_least("decay_steps", decay_steps, 1);
  return leaf({ScheduleKind::exponential_decay, {lr, decay_rate}, {decay_steps, staircase ? 1 : 0}, {}});
}

Schedule Schedule::inverse_time(double lr, double decay_rate, std::int64_t decay_steps, bool staircase) {
  require_nonneg("lr", lr);
  require_nonneg("decay_rate", decay_rate);
  require_at_least("decay_steps", decay_steps, 1);
  return leaf({ScheduleKind::inverse_time, {lr, decay_rate}, {decay_steps, staircase ? 1 : 0}, {}});
}

Schedule Schedule::time_based(double lr, double decay) {
  require_nonneg("lr", lr);
  require_nonneg("decay", decay);
  return leaf({ScheduleKind::time_based, {lr, decay}, {}, {}});
}

Schedule Schedule::polynomial(double lr, std::int64_t total_steps, double power, double end_lr) {
  require_nonneg("lr", lr);
  require_at_least("total_steps", total_steps, 1);
  require_nonneg("power", power);
  require_nonneg("end_lr", end_lr);
  return leaf({ScheduleKind::polynomial, {lr, power, end_lr}, {total_steps}, {}});
}

Schedule Schedule::linear(double start_lr, double end_lr, std::int64_t total_steps) {
  require_nonneg("start_lr", start_lr);
  require_nonneg("end_lr", end_lr);
  require_at_least("total_steps", total_steps, 1);
  return leaf({ScheduleKind::linear, {start_lr, end_lr}, {total_steps}, {}});
}

Schedule Schedule::cosine(double lr, std::int64_t total_steps, double final_lr) {
  require_nonneg("lr", lr);
  require_at_least("total_steps", total_steps, 1);
  require_nonneg("final_lr", final_lr);
  return leaf({ScheduleKind::cosine, {lr, final_lr}, {total_steps}, {}});
}

Schedule Schedule::cosine_restarts(double lr, std::int64_t period, std::int64_t period_mult, double final_lr) {
  require_nonneg("lr", lr);
  require_at_least("period", period, 1);
  require_at_least("period_mult", period_mult, 1);
  require_nonneg("final_lr", final_lr);
  return leaf({ScheduleKind::cosine_restarts, {lr, final_lr}, {period, period_mult}, {}});
}

Schedule Schedule::cyclic(double base_lr, double max_lr, std::int64_t step_size_up, std::int64_t step_size_down,
                          const std::string& mode, double gamma) {
  require_nonneg("base_lr", base_lr);
  require_nonneg("max_lr", max_lr);
  require_at_least("step_size_up", step_size_up, 1);
  require_at_least("step_size_down", step_size_down, 1);
  std::int64_t m;
  if (mode == "triangular")
    m = triangular;
  else if (mode == "triangular2")
    m = triangular2;
  else if (mode == "exp_range")
    m = exp_range;
  else
    fail("mode must be 'triangular', 'triangular2' or 'exp_range', got '" + mode + "'");
  require_nonneg("gamma", gamma);
  return leaf({ScheduleKind::cyclic, {base_lr, max_lr, gamma}, {step_size_up, step_size_down, m}, {}});
}

Schedule Schedule::one_cycle(double max_lr, std::int64_t total_steps, double pct_start,
                             const std::string& anneal_strategy, double div_factor, double final_div_factor,
                             bool three_phase) {
  require_nonneg("max_lr", max_lr);
  require_at_least("total_steps", total_steps, 2);
  if (!(pct_start > 0.0 && pct_start < 1.0)) fail("pct_start must be in (0, 1), got " + number(pct_start));
  std::int64_t anneal;
  if (anneal_strategy == "cos")
    anneal = anneal_cos;
  else if (anneal_strategy == "linear")
    anneal = anneal_linear;
  else
    fail("anneal_strategy must be 'cos' or 'linear', got '" + anneal_strategy + "'");
  require_positive("div_factor", div_factor);
  require_positive("final_div_factor", final_div_factor);
  ScheduleNode node{ScheduleKind::one_cycle,
                    {max_lr, pct_start, div_factor, final_div_factor},
                    {total_steps, anneal, three_phase ? 1 : 0},
                    {}};
  // torch divides by each phase's length (0/0 for an empty one) and lets a
  // phase end before the previous one; require every phase to move forward.
  const OneCyclePhases p = one_cycle_phases(node);
  double start = 0.0;
  for (int i = 0; i < p.count; ++i) {
    if (!(p.end[i] > start))
      fail("pct_start=" + number(pct_start) + " with total_steps=" + std::to_string(total_steps) +
           (three_phase ? " and three_phase" : "") + " leaves phase " + std::to_string(i + 1) +
           " of the cycle without steps (its end step " + number(p.end[i]) + " is not after " + number(start) +
           ")");
    start = p.end[i];
  }
  return leaf(std::move(node));
}

Schedule Schedule::piecewise_constant(const std::vector<std::int64_t>& boundaries, const std::vector<double>& values) {
  require_sorted("boundaries", boundaries, true);
  if (values.size() != boundaries.size() + 1)
    fail("values must have one more entry than boundaries, got " + std::to_string(values.size()) + " values for " +
         std::to_string(boundaries.size()) + " boundaries");
  for (std::size_t j = 0; j < values.size(); ++j) require_nonneg(("values[" + std::to_string(j) + "]").c_str(), values[j]);
  return leaf({ScheduleKind::piecewise_constant, values, boundaries, {}});
}

// The one place the composition limits are enforced (from_dict refuses the
// same before it recurses, reading the limits from here).
void Schedule::check_limits() const {
  if (nodes_.size() > kMaxScheduleNodes)
    fail("a schedule may have at most " + std::to_string(kMaxScheduleNodes) + " nodes, this one would have " +
         std::to_string(nodes_.size()));
  std::vector<std::size_t> depth(nodes_.size(), 1);  // children come before their parent
  for (std::size_t j = 0; j < nodes_.size(); ++j)
    for (std::size_t c : nodes_[j].children) depth[j] = std::max(depth[j], depth[c] + 1);
  if (depth.back() > kMaxScheduleDepth)
    fail("schedules nest at most " + std::to_string(kMaxScheduleDepth) +
         " levels deep (warmup and sequence each add one), this one would nest " + std::to_string(depth.back()));
}

Schedule Schedule::warmup(const Schedule& schedule, std::int64_t steps, double start_lr) {
  require_at_least("steps", steps, 0);
  require_nonneg("start_lr", start_lr);
  Schedule s = schedule;
  s.nodes_.push_back({ScheduleKind::warmup, {start_lr}, {steps}, {schedule.nodes_.size() - 1}});
  s.check_limits();
  return s;
}

Schedule Schedule::sequence(const std::vector<Schedule>& schedules, const std::vector<std::int64_t>& boundaries) {
  if (schedules.empty()) fail("schedules must not be empty");
  if (boundaries.size() + 1 != schedules.size())
    fail("boundaries must have one fewer entry than schedules, got " + std::to_string(boundaries.size()) +
         " boundaries for " + std::to_string(schedules.size()) + " schedules");
  require_sorted("boundaries", boundaries, true);
  std::size_t total = 1;
  for (const Schedule& child : schedules) total += child.nodes_.size();
  if (total > kMaxScheduleNodes)  // before copying anything
    fail("a schedule may have at most " + std::to_string(kMaxScheduleNodes) + " nodes, this one would have " +
         std::to_string(total));
  Schedule s;
  ScheduleNode root{ScheduleKind::sequence, {}, boundaries, {}};
  for (const Schedule& child : schedules) {
    const std::size_t offset = s.nodes_.size();
    for (ScheduleNode node : child.nodes_) {
      for (std::size_t& c : node.children) c += offset;
      s.nodes_.push_back(std::move(node));
    }
    root.children.push_back(s.nodes_.size() - 1);
  }
  s.nodes_.push_back(std::move(root));
  s.check_limits();
  return s;
}

}  // namespace gradstep

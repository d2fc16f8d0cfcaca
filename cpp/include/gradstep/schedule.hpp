// Learning-rate schedules: a small tree of nodes, evaluated in closed form at
// any step. Plain C++, no Python.
//
// Steps are 0-based: update k (the k-th call to an optimizer's step, counting
// from 0) uses the rate schedule(k). Where torch.optim.lr_scheduler has the
// schedule, schedule(k) is torch's get_last_lr() after k scheduler steps.
// Every factory validates its arguments and throws std::invalid_argument
// naming the offending one (with the Python API's parameter names).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace gradstep {

enum class ScheduleKind : std::uint8_t {
  constant,
  step,
  multistep,
  exponential,       // lr * gamma^k
  exponential_rate,  // lr * e^(-rate k)
  exponential_decay,
  inverse_time,
  time_based,
  polynomial,
  linear,
  cosine,
  cosine_restarts,
  cyclic,
  one_cycle,
  piecewise_constant,
  warmup,
  sequence,
};

// One node of a schedule. `real` and `integer` hold its parameters, in the
// order the factory below takes them (flags and modes as integers);
// `children` are indices of the sub-schedules it evaluates, always smaller
// than the node's own index, so the root is the last node.
struct ScheduleNode {
  ScheduleKind kind = ScheduleKind::constant;
  std::vector<double> real;
  std::vector<std::int64_t> integer;
  std::vector<std::size_t> children;
};

// Composition limits: warmup and sequence each add one level of nesting
// over their children (a plain schedule is one level), and a sequence
// copies its children's nodes. Deeper or larger compositions are refused
// when built (std::invalid_argument), which bounds evaluation's recursion
// and a schedule's size (nested sequences would otherwise double it per level).
inline constexpr std::size_t kMaxScheduleDepth = 64;
inline constexpr std::size_t kMaxScheduleNodes = 10000;

class Schedule {
 public:
  // The rate of update k; throws std::invalid_argument if k < 0, or if the
  // rate is not finite there (a growing schedule past the float64 range).
  // Every value lies in the range the schedule's formula allows.
  double operator()(std::int64_t k) const;
  // out[i] = (*this)(k[i]). Every k is checked before any out is written.
  void eval(const std::int64_t* k, double* out, std::size_t n) const;

  const std::vector<ScheduleNode>& nodes() const { return nodes_; }

  // ---- factories (names, parameters and defaults of gradstep.schedules) ----
  static Schedule constant(double lr);
  // StepLR: lr * gamma^floor(k / step_size).
  static Schedule step(double lr, std::int64_t step_size, double gamma = 0.1);
  // MultiStepLR: lr * gamma^(number of milestones <= k); milestones
  // non-decreasing (a repeated milestone applies gamma once per repeat, as in torch).
  static Schedule multistep(double lr, const std::vector<std::int64_t>& milestones, double gamma = 0.1);
  // ExponentialLR: lr * gamma^k.
  static Schedule exponential(double lr, double gamma);
  // lr * e^(-rate k).
  static Schedule exponential_rate(double lr, double rate);
  // lr * decay_rate^(k / decay_steps), the exponent floored when staircase.
  static Schedule exponential_decay(double lr, double decay_rate, std::int64_t decay_steps,
                                    bool staircase = false);
  // lr / (1 + decay_rate * k / decay_steps), the quotient floored when staircase.
  static Schedule inverse_time(double lr, double decay_rate, std::int64_t decay_steps = 1,
                               bool staircase = false);
  // eta_0 = lr, eta_{n+1} = eta_n / (1 + decay n), in closed form.
  static Schedule time_based(double lr, double decay);
  // PolynomialLR with an end value: (lr - end_lr)(1 - min(k, T)/T)^power + end_lr.
  static Schedule polynomial(double lr, std::int64_t total_steps, double power = 1.0, double end_lr = 0.0);
  // start_lr + (end_lr - start_lr) min(k, T)/T.
  static Schedule linear(double start_lr, double end_lr, std::int64_t total_steps);
  // CosineAnnealingLR: final_lr + (lr - final_lr)(1 + cos(pi k / T))/2 for every
  // k, so past total_steps it rises again with period 2T, as torch's does.
  static Schedule cosine(double lr, std::int64_t total_steps, double final_lr = 0.0);
  // CosineAnnealingWarmRestarts (T_0 = period, T_mult = period_mult).
  static Schedule cosine_restarts(double lr, std::int64_t period, std::int64_t period_mult = 1,
                                  double final_lr = 0.0);
  // CyclicLR; mode is "triangular", "triangular2" or "exp_range".
  static Schedule cyclic(double base_lr, double max_lr, std::int64_t step_size_up = 2000,
                         std::int64_t step_size_down = 2000, const std::string& mode = "triangular",
                         double gamma = 1.0);
  // OneCycleLR; anneal_strategy is "cos" or "linear". Steps k >= total_steps - 1
  // keep the last rate, max_lr / (div_factor * final_div_factor).
  static Schedule one_cycle(double max_lr, std::int64_t total_steps, double pct_start = 0.3,
                            const std::string& anneal_strategy = "cos", double div_factor = 25.0,
                            double final_div_factor = 1e4, bool three_phase = false);
  // values[i] for boundaries[i-1] <= k < boundaries[i]; boundaries increasing.
  static Schedule piecewise_constant(const std::vector<std::int64_t>& boundaries,
                                     const std::vector<double>& values);
  // k < steps: start_lr + (schedule(0) - start_lr) k / steps; then schedule(k - steps).
  static Schedule warmup(const Schedule& schedule, std::int64_t steps, double start_lr = 0.0);
  // schedules[i] at k - boundaries[i-1] for boundaries[i-1] <= k < boundaries[i]
  // (boundaries[-1] = 0); boundaries increasing, one fewer than schedules.
  static Schedule sequence(const std::vector<Schedule>& schedules, const std::vector<std::int64_t>& boundaries);

 private:
  Schedule() = default;
  static Schedule leaf(ScheduleNode node);
  double at(std::size_t node, std::int64_t k) const;
  double finite_at(std::int64_t k) const;
  void check_limits() const;

  std::vector<ScheduleNode> nodes_;
};

// The rate after ReduceLROnPlateau-style scaling: max(scale * rate,
// min(rate, min_lr)). The scale never takes the rate below min_lr, and never
// lifts a schedule that is already below min_lr. Throws std::invalid_argument
// unless scale and min_lr are finite and >= 0.
double plateau_rate(double rate, double scale, double min_lr);

}  // namespace gradstep

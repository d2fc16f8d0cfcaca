// Unit tests of the C++ schedule API: kinds as values, their defaults
// (including Cyclic's step_size_down = step_size_up), validation naming the
// field, composition limits, an empty Schedule.
//
// Run before test_core's main() by a static object (main prints the totals),
// so that adding this file touches no other test file.
#include <gradstep/schedule.hpp>

#include "check.hpp"

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace {
using gradstep::Schedule;
using gradstep_test::check;
using gradstep_test::throws_invalid;
using namespace gradstep::schedules;

void run_schedule_tests() {
  // Values: a few exact ones.
  const Schedule step = Step{0.1, 3};  // gamma defaults to 0.1
  check(step(0) == 0.1 && step(3) == 0.1 * std::pow(0.1, 1.0), "Step's default gamma is 0.1");
  const Schedule cosine = Cosine{1.0, 10};
  check(cosine(0) == 1.0 && cosine(10) == 0.0 && cosine(20) == 1.0, "Cosine endpoints, final_lr default 0");
  check(std::string(cosine.name()) == "cosine" && cosine.size() == 1 && cosine.depth() == 1, "name, size, depth");

  // Cyclic: step_size_down unset is step_size_up, and the built node says so.
  const Schedule implicit = Cyclic{0.001, 0.006, 7}, explicit_down = Cyclic{0.001, 0.006, 7, 7};
  bool same = true;
  for (std::int64_t k = 0; k < 100; ++k) same = same && implicit(k) == explicit_down(k);
  check(same, "Cyclic step_size_down defaults to step_size_up");
  check(std::get<Cyclic>(implicit.node()).step_size_down == 7, "the built Cyclic node has step_size_down set");
  const Schedule cyclic_defaults = Cyclic{0.001, 0.006};
  check(std::get<Cyclic>(cyclic_defaults.node()).step_size_down == 2000 &&
            std::get<Cyclic>(cyclic_defaults.node()).mode == CyclicMode::triangular,
        "Cyclic defaults: 2000 up, as many down, triangular");

  // Composition: kinds compose as values, children are shared.
  const Schedule warm = Warmup{Cosine{0.1, 100}, 10, 0.01};
  check(warm(0) == 0.01 && warm(10) == 0.1 && warm.size() == 2 && warm.depth() == 2, "Warmup over Cosine");
  const Schedule seq = Sequence{{Constant{0.1}, warm, Exponential{0.1, 0.5}}, {5, 50}};
  check(seq(4) == 0.1 && seq(5) == warm(0) && seq(51) == 0.05 && seq.size() == 5 && seq.depth() == 3,
        "Sequence of three");

  // Validation names the field.
  check(throws_invalid([] { Schedule s = Cosine{0.1, 0}; }, "total_steps must be an integer >= 1"),
        "Cosine total_steps");
  check(throws_invalid([] { Schedule s = Step{-1.0, 3}; }, "lr must be a finite number >= 0"), "Step lr");
  check(throws_invalid([] { Schedule s = Cyclic{0.1, 0.2, 5, 0}; }, "step_size_down"), "Cyclic step_size_down");
  check(throws_invalid([] { Schedule s = Cyclic{0.1, 0.2, 5, {}, static_cast<CyclicMode>(9)}; },
                       "mode must be 'triangular', 'triangular2' or 'exp_range'"),
        "Cyclic unknown mode");
  check(throws_invalid([] { parse_choice<Anneal>("anneal_strategy", "cosine"); },
                       "anneal_strategy must be 'cos' or 'linear', got 'cosine'"),
        "parse_choice");
  check(parse_choice<Anneal>("anneal_strategy", "linear") == Anneal::linear, "parse_choice finds a name");
  check(throws_invalid([] { Schedule s = OneCycle{0.1, 100, 0.01}; }, "phase 1"), "OneCycle empty phase");
  check(throws_invalid([] { Schedule s = PiecewiseConstant{{10, 20}, {0.1, 0.2}}; }, "one more entry"),
        "PiecewiseConstant lengths");
  check(throws_invalid([] { Schedule s = Sequence{{Constant{0.1}}, {5}}; }, "one fewer entry"),
        "Sequence lengths");
  check(throws_invalid([] { Schedule s = Sequence{{}, {}}; }, "schedules must not be empty"), "empty Sequence");

  // An empty Schedule is refused where a schedule is used.
  const Schedule empty;
  check(empty.empty() && throws_invalid([&] { empty(0); }, "empty"), "an empty schedule has no rate");
  check(throws_invalid([&] { Schedule s = Warmup{empty, 3}; }, "schedule must not be an empty schedule"),
        "Warmup of an empty schedule");

  // Limits: depth 64 is allowed, 65 is not.
  Schedule deep = Constant{0.1};
  for (int i = 1; i < 64; ++i) deep = Warmup{deep, 2};
  check(deep.depth() == 64 && deep(1000) == 0.1, "64 levels");
  check(throws_invalid([&] { Schedule s = Warmup{deep, 2}; }, "nest at most 64"), "65 levels refused");
  std::vector<Schedule> wide(gradstep::kMaxScheduleNodes, Constant{0.1});
  std::vector<std::int64_t> bounds;
  for (std::size_t i = 1; i < wide.size(); ++i) bounds.push_back(static_cast<std::int64_t>(i));
  check(throws_invalid([&] { Schedule s = Sequence{wide, bounds}; }, "at most 10000 nodes, this one would have 10001"),
        "10001 nodes refused");
}

// Runs before main(): the counters are constant-initialized.
const struct Runner {
  Runner() { run_schedule_tests(); }
} runner;

}  // namespace

// Unit tests of the public C++ API: validation, aliasing checks, per-ISA
// bit identity, the convenience step(), copies and moves, (test_threads.cpp)
// threaded steps, (test_plan.cpp) a set's blocks following the thread count,
// and (test_half.cpp) bf16/f16 params, grads, states and masters.
// Prints "N passed, M failed".
#include <gradstep/gradstep.hpp>

#include "check.hpp"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace {
using gradstep_test::check;
using gradstep_test::throws_invalid;

struct Adam1 {
  std::vector<double> p, g, m, v;
  explicit Adam1(std::size_t n) : p(n), g(n), m(n), v(n) {
    for (std::size_t i = 0; i < n; ++i) {
      p[i] = std::sin(double(i));
      g[i] = std::cos(3.0 * double(i));
    }
  }
  gradstep::TensorView view() {
    gradstep::TensorView t;
    t.param = p.data();
    t.grad = g.data();
    t.state[0] = m.data();
    t.state[1] = v.data();
    t.size = p.size();
    t.dtype = gradstep::DType::f64;
    return t;
  }
};
}  // namespace

int main() {
  gradstep::AdamOptions adam;
  adam.lr = 0.01;

  {  // Adam's first step moves each weight by lr * g / (|g| + eps).
    Adam1 a(37);
    auto t = a.view();
    gradstep::step(adam, &t, 1, 1);
    bool ok = true;
    for (std::size_t i = 0; i < a.p.size(); ++i) {
      const double want = std::sin(double(i)) - 0.01 * a.g[i] / (std::fabs(a.g[i]) + 1e-8);
      ok = ok && std::fabs(a.p[i] - want) <= 1e-12;
    }
    check(ok, "first Adam step");
  }
  {  // Bad options and buffers are rejected before anything is written.
    Adam1 a(8);
    auto t = a.view();
    gradstep::AdamOptions bad = adam;
    bad.beta1 = 1.0;
    check(throws_invalid([&] { gradstep::step(bad, &t, 1, 1); }, "betas[0]"), "beta1 = 1 rejected");
    bad = adam;
    bad.lr = std::nan("");
    check(throws_invalid([&] { gradstep::step(bad, &t, 1, 1); }, "lr"), "NaN lr rejected");
    check(throws_invalid([&] { gradstep::step(adam, &t, 1, 0); }, "step"), "step 0 rejected");
    t.grad = a.p.data() + 2;
    check(throws_invalid([&] { gradstep::step(adam, &t, 1, 1); }, "grad overlaps"), "grad aliasing param");
    t = a.view();
    t.state[1] = nullptr;
    check(throws_invalid([&] { gradstep::step(adam, &t, 1, 1); }, "null"), "missing state");
    check(a.p[0] == std::sin(0.0) && a.m[3] == 0.0, "nothing written on error");
  }
  {  // Every ISA target gives the same bytes (odd length for the tails).
    std::vector<std::vector<double>> results;
    for (gradstep::Isa isa : gradstep::available_isas()) {
      gradstep::set_isa(gradstep::isa_name(isa));
      Adam1 a(1001);
      auto t = a.view();
      gradstep::TensorSet set(&t, 1, gradstep::state_mask(adam));
      for (int k = 1; k <= 5; ++k) set.step(adam, k);
      results.push_back(a.p);
    }
    bool same = true;
    for (const auto& r : results)
      same = same && std::memcmp(r.data(), results[0].data(), r.size() * sizeof(double)) == 0;
    check(same && !results.empty(), "bit-identical across ISA targets");
    check(throws_invalid([] { gradstep::set_isa("nope"); }, "unknown"), "unknown ISA rejected");
  }
  {  // A set is copyable (the copy steps the same buffers) and movable; a
     // moved-from set is empty and refuses to step.
    static_assert(std::is_nothrow_move_constructible_v<gradstep::TensorSet> &&
                  std::is_nothrow_move_assignable_v<gradstep::TensorSet>);
    Adam1 a(300), b(300);
    auto ta = a.view(), tb = b.view();
    gradstep::TensorSet set(&ta, 1, gradstep::state_mask(adam));
    set.step(adam, 1);
    gradstep::TensorSet copy = set;
    copy.step(adam, 2);
    gradstep::TensorSet moved = std::move(set);
    moved.step(adam, 3);
    gradstep::TensorSet other(&tb, 1, gradstep::state_mask(adam));
    for (int k = 1; k <= 3; ++k) other.step(adam, k);
    check(a.p == b.p && a.m == b.m && a.v == b.v, "steps through a copy and a moved-to set = through one set");
    check(moved.size() == 1 && moved[0].param == a.p.data() && copy[0].param == a.p.data(),
          "copies and moved-to sets view the same buffers");
    bool refused = false;
    try {
      set.step(adam, 4);  // NOLINT(bugprone-use-after-move): that is the point
    } catch (const std::logic_error&) {
      refused = true;
    }
    check(set.size() == 0 && refused && a.p == b.p, "a moved-from set is empty and refuses to step");
    copy = moved;
    check(copy.size() == 1, "copy assignment");
  }
  {  // A Mode (Schedule-Free): steps refused until switched on; the switch
     // moves the params and records the mode; carried values come back.
    std::vector<double> p(9), g(9), z;
    for (std::size_t i = 0; i < p.size(); ++i) {
      p[i] = std::sin(double(i));
      g[i] = std::cos(3.0 * double(i));
    }
    z = p;  // z starts as a copy of the param
    gradstep::TensorView t;
    t.param = p.data();
    t.grad = g.data();
    t.state[0] = z.data();
    t.size = p.size();
    t.dtype = gradstep::DType::f64;
    gradstep::SgdScheduleFreeOptions sf;
    sf.lr = 0.1;
    gradstep::TensorSet set(&t, 1, gradstep::state_mask(sf));
    const std::vector<double> start = p;
    bool refused = false;
    try {
      set.step(sf, 1);
    } catch (const std::logic_error& e) {
      refused = std::strstr(e.what(), "call train()") != nullptr;
    }
    check(refused && p == start && z == start, "a step in eval mode is refused and writes nothing");
    sf = set.switch_mode(sf, true);
    check(sf.train_mode && p == start, "train() before the first step leaves the params (z = p)");
    const gradstep::StepReport r = set.step(sf, 1);
    sf = gradstep::with_carried(sf, r);
    check(sf.lr_max == 0.1 && sf.weight_sum == std::pow(0.1, 2.0) && sf.train_mode, "carried values after a step");
    const std::vector<double> y = p;
    sf = set.switch_mode(sf, false);
    bool at_x = !sf.train_mode;
    for (std::size_t i = 0; i < p.size(); ++i)
      at_x = at_x && std::fabs(p[i] - (y[i] + (1.0 - 1.0 / 0.9) * (z[i] - y[i]))) <= 1e-15;
    check(at_x, "eval() moves the params to x");
    const std::vector<double> x = p;
    check(!set.switch_mode(sf, false).train_mode && p == x, "eval() again is a no-op");
    gradstep::TensorSet adam_set(&t, 1, 0u);
    bool no_mode = false;
    try {
      adam_set.switch_mode(gradstep::SgdOptions{}, true);
    } catch (const std::logic_error& e) {
      no_mode = std::strstr(e.what(), "no modes") != nullptr;
    }
    check(no_mode, "an optimizer without a Mode refuses a switch");
  }
  {  // States of another extent than the param's: Adafactor's row_var (one per row of a 4 x 3
     // matrix) and col_var (one per column), each overlap-checked by its own size.
    std::vector<double> p(12, 1.0), g(12, 0.5), vars(7, 0.0);
    gradstep::TensorView t;
    t.param = p.data();
    t.grad = g.data();
    t.size = 12;
    t.dtype = gradstep::DType::f64;
    t.batch = 1;
    t.rows = 4;
    t.cols = 3;
    t.state[0] = vars.data();      // row_var: 4
    t.state[1] = vars.data() + 4;  // col_var: 3, right after it
    const gradstep::AdafactorOptions af;
    check(gradstep::slot_size(gradstep::state_extents(af).slot[0], t) == 4 &&
              gradstep::slot_size(gradstep::state_extents(af).slot[1], t) == 3 &&
              gradstep::slot_size(gradstep::state_extents(af).slot[2], t) == 0,
          "Adafactor's slots: rows, cols, no vector buffer for a matrix");
    gradstep::step(af, &t, 1, 1);
    // Step 1 lerps with weight 1: each row's and column's mean of g^2 exactly.
    check(vars[0] == 0.25 && vars[3] == 0.25 && vars[4] == 0.25 && vars[6] == 0.25, "row and column means");
    check(p[0] < 1.0, "the params moved");
    gradstep::TensorView overlapping = t;
    overlapping.state[1] = vars.data() + 3;
    check(throws_invalid([&] { gradstep::step(af, &overlapping, 1, 1); }, "overlap"),
          "col_var overlapping row_var's last element is refused");
    gradstep::TensorView no_matrix = t;
    no_matrix.rows = 5;
    check(throws_invalid([&] { gradstep::step(af, &no_matrix, 1, 1); }, "matrix shape"),
          "a matrix shape that does not hold size elements is refused");
    std::vector<double> s0(12), s1(12), s2(12);
    gradstep::TensorView whole = t;
    whole.state[0] = s0.data();
    whole.state[1] = s1.data();
    whole.state[2] = s2.data();
    gradstep::TensorSet full(&whole, 1, gradstep::state_mask(af));  // built for the param's size everywhere
    check(throws_invalid([&] { full.step(af, 1); }, "extent"), "a set built for other extents refuses the step");
    gradstep::ProdigyOptions prodigy;
    prodigy.slice_p = 5;
    gradstep::TensorView v;
    v.size = 12;
    check(gradstep::slot_size(gradstep::state_extents(prodigy).slot[0], v) == 3,
          "Prodigy's s with slice_p = 5: every fifth of 12 elements");
  }
  {  // step_groups: per-group options where the kernel reads them (Prodigy's weight_decay).
    auto prodigy_set = [](std::vector<double>& p, std::vector<double>& g, std::vector<std::vector<double>>& st,
                          gradstep::TensorView* t) {
      for (int k = 0; k < 2; ++k) {
        t[k].param = p.data() + 8 * k;
        t[k].grad = g.data() + 8 * k;
        for (int s = 0; s < 4; ++s) t[k].state[s] = st[s].data() + 8 * k;
        t[k].size = 8;
        t[k].dtype = gradstep::DType::f64;
      }
    };
    auto fresh = [](std::vector<double>& p, std::vector<double>& g, std::vector<std::vector<double>>& st) {
      p.assign(16, 0.0);
      g.assign(16, 0.0);
      st.assign(4, std::vector<double>(16, 0.0));
      for (std::size_t i = 0; i < 16; ++i) {
        p[i] = st[1][i] = std::sin(double(i) + 1.0);  // p0 starts as p
        g[i] = std::cos(2.0 * double(i));
      }
    };
    std::vector<double> p1, g1, p2, g2;
    std::vector<std::vector<double>> s1, s2;
    fresh(p1, g1, s1);
    fresh(p2, g2, s2);
    gradstep::TensorView t1[2], t2[2];
    prodigy_set(p1, g1, s1, t1);
    prodigy_set(p2, g2, s2, t2);
    gradstep::ProdigyOptions o;
    o.weight_decay = 0.1;
    gradstep::TensorSet a(t1, 2, gradstep::state_mask(o)), b(t2, 2, gradstep::state_mask(o));
    const gradstep::ProdigyOptions same[1] = {o};
    const std::uint32_t zeros[2] = {0, 0}, split[2] = {0, 1};
    const gradstep::StepReport ra = a.step(o, 1), rb = b.step_groups(o, same, 1, zeros, 1);
    check(p1 == p2 && s1 == s2 && ra.carried[0] == rb.carried[0], "step_groups with one group is step()");
    gradstep::ProdigyOptions other = o;
    other.weight_decay = 0.0;
    const gradstep::ProdigyOptions two[2] = {o, other};
    fresh(p2, g2, s2);
    const std::uint32_t bad[2] = {0, 2};
    check(throws_invalid([&] { b.step_groups(o, two, 2, bad, 1); }, "group index"), "group index out of range");
    gradstep::ProdigyOptions negative = other;
    negative.weight_decay = -1.0;
    const gradstep::ProdigyOptions wrong[2] = {o, negative};
    check(throws_invalid([&] { b.step_groups(o, wrong, 2, split, 1); }, "group 1: weight_decay"),
          "a group's bad option named");
    check(p2[0] == std::sin(1.0) && s2[2][0] == 0.0, "nothing written on error");
    b.step_groups(o, two, 2, split, 1);  // p1: the step with weight_decay 0.1 for both
    bool second_differs = false;
    for (std::size_t i = 8; i < 16; ++i) second_differs = second_differs || p1[i] != p2[i];
    check(second_differs, "the second group steps with its own weight_decay");
    bool refused = false;
    Adam1 adam1(4);
    auto adam_t = adam1.view();
    gradstep::TensorSet adam_set(&adam_t, 1, gradstep::state_mask(adam));
    try {
      adam_set.step_groups(adam, &adam, 1, zeros, 1);
    } catch (const std::logic_error& e) {
      refused = std::strstr(e.what(), "no per-group options") != nullptr;
    }
    check(refused, "an optimizer without per-group options refuses step_groups");
  }
  gradstep_test::run_thread_tests();
  gradstep_test::run_plan_tests();
  gradstep_test::run_half_tests();
  std::printf("%d passed, %d failed\n", gradstep_test::passed, gradstep_test::failed);
  return gradstep_test::failed == 0 ? 0 : 1;
}

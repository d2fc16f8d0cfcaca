// bfloat16 / float16 params, grads and states (issue 13), checked against
// float32 runs of the same optimizer: the staged path (cpp/src/algorithms/
// common.inl's staged_chunk) must be transparent. The expected half bits are
// computed here from first principles (reference conversions in double, on
// the IEEE definition, not the core's integer code), on every ISA target the
// CPU has and on 1-4 threads.
#include <gradstep/gradstep.hpp>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "check.hpp"

namespace gradstep_test {
namespace {

using gradstep::DType;
using gradstep::Rounding;
using gradstep::StepControl;
using gradstep::StepReport;
using gradstep::TensorView;

// ---- reference conversions ----------------------------------------------------

bool is_half(DType d) { return d == DType::bf16 || d == DType::f16; }

std::uint32_t float_bits(float x) {
  std::uint32_t u;
  std::memcpy(&u, &x, 4);
  return u;
}
float bits_float(std::uint32_t u) {
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}

// A half format: explicit mantissa bits, exponent bias and exponent width.
struct Format {
  int mantissa, bias, exponent_bits;
};
Format format_of(DType d) { return d == DType::bf16 ? Format{7, 127, 8} : Format{10, 15, 5}; }

// The value of half bits h.
float widen(DType d, std::uint16_t h) {
  if (d == DType::bf16) return bits_float(std::uint32_t(h) << 16);  // bf16 is float32's upper half
  const Format f = format_of(d);
  const int e = (h >> f.mantissa) & ((1 << f.exponent_bits) - 1), m = h & ((1 << f.mantissa) - 1);
  double a;
  if (e == (1 << f.exponent_bits) - 1)
    a = m == 0 ? INFINITY : NAN;
  else if (e == 0)
    a = std::ldexp(double(m), 1 - f.bias - f.mantissa);
  else
    a = std::ldexp(double(m + (1 << f.mantissa)), e - f.bias - f.mantissa);
  return float(h & 0x8000 ? -a : a);
}

enum class Mode { nearest, toward_zero, away };

// x in format d, rounded by mode: the magnitude
// as an integer multiple of its quantum (exact in double), rounded (rint:
// ties to even), and the bits ((E + bias - 1) << mantissa) + N, which is the
// encoding for normal and subnormal numbers alike.
std::uint16_t encode(DType d, float x, Mode mode = Mode::nearest) {
  const Format f = format_of(d);
  const std::uint16_t sign = std::signbit(x) ? 0x8000 : 0;
  const std::uint16_t inf = std::uint16_t(((1 << f.exponent_bits) - 1) << f.mantissa);
  const double a = std::fabs(double(x));
  if (std::isnan(a)) return sign | inf | std::uint16_t(1 << (f.mantissa - 1));  // a quiet NaN
  if (std::isinf(a)) return sign | inf;
  const int emin = 1 - f.bias;
  int k = 0;
  std::frexp(a, &k);
  int E = a == 0.0 ? emin : k - 1;
  if (E < emin) E = emin;
  const double q = std::ldexp(a, f.mantissa - E);  // in [0, 2^(mantissa+1))
  const double n = mode == Mode::nearest ? std::nearbyint(q) : mode == Mode::toward_zero ? std::floor(q) : std::ceil(q);
  std::uint64_t N = std::uint64_t(n);
  if (N == (std::uint64_t(2) << f.mantissa)) {
    N >>= 1;
    ++E;
  }
  if (E + f.bias >= (1 << f.exponent_bits) - 1) return sign | inf;
  return sign | std::uint16_t((std::uint64_t(E + f.bias - 1) << f.mantissa) + N);
}

// The reference against bit patterns known from the formats' definitions.
void reference_conversions() {
  struct Known {
    DType d;
    float x;
    std::uint16_t bits;
  };
  const Known known[] = {
      {DType::bf16, 1.0f, 0x3f80},          {DType::bf16, -2.0f, 0xc000},
      {DType::bf16, 3.14159265f, 0x4049},   {DType::bf16, 1.0f + 0x1p-8f, 0x3f80},  // tie: even
      {DType::bf16, 1.0f + 0x3p-8f, 0x3f82},                                        // tie: even (up)
      {DType::bf16, 1.0f + 0x1p-8f + 0x1p-20f, 0x3f81},                             // above the tie
      {DType::bf16, 0x1p-133f, 0x0001},     {DType::bf16, 0x1p-126f, 0x0080},       // subnormal, least normal
      {DType::bf16, 3.0e38f, 0x7f62},       {DType::bf16, 3.4e38f, 0x7f80},         // rounds to inf
      {DType::bf16, INFINITY, 0x7f80},      {DType::bf16, -0.0f, 0x8000},
      {DType::f16, 1.0f, 0x3c00},           {DType::f16, -2.0f, 0xc000},
      {DType::f16, 1.0f / 3.0f, 0x3555},    {DType::f16, 65504.0f, 0x7bff},
      {DType::f16, 65519.0f, 0x7bff},       {DType::f16, 65520.0f, 0x7c00},         // tie to inf
      {DType::f16, 0x1p-24f, 0x0001},       {DType::f16, 0x1p-25f, 0x0000},         // tie: even (0)
      {DType::f16, 0x3p-25f, 0x0002},       {DType::f16, 0x1p-14f, 0x0400},
      {DType::f16, 0x3ffp-24f, 0x03ff},     {DType::f16, 1.0f + 0x1p-11f, 0x3c00},
      {DType::f16, 1.0f + 0x3p-11f, 0x3c02}, {DType::f16, -INFINITY, 0xfc00},
  };
  bool ok = true;
  for (const Known& k : known) {
    const bool good = encode(k.d, k.x) == k.bits && (std::isinf(widen(k.d, k.bits)) || k.bits == 0x0000 ||
                                                     widen(k.d, encode(k.d, widen(k.d, k.bits))) == widen(k.d, k.bits));
    if (!good) std::printf("  reference %s of %a: %04x, want %04x\n", k.d == DType::bf16 ? "bf16" : "f16", double(k.x),
                           encode(k.d, k.x), k.bits);
    ok = ok && good;
  }
  check(ok, "the test's reference conversions give the known bit patterns");
  check(widen(DType::f16, 0x7bff) == 65504.0f && widen(DType::f16, 0x0001) == 0x1p-24f &&
            widen(DType::bf16, 0x4049) == 3.140625f,
        "the test's widening gives the known values");
}

// ---- buffers of any dtype ---------------------------------------------------------

struct Buf {
  DType d = DType::f32;
  std::vector<float> f;
  std::vector<std::uint16_t> h;
  void resize(DType dtype, std::size_t n) {
    d = dtype;
    f.assign(is_half(d) ? 0 : n, 0.0f);
    h.assign(is_half(d) ? n : 0, 0);
  }
  std::size_t size() const { return is_half(d) ? h.size() : f.size(); }
  void* data() { return is_half(d) ? static_cast<void*>(h.data()) : static_cast<void*>(f.data()); }
  float get(std::size_t i) const { return is_half(d) ? widen(d, h[i]) : f[i]; }
  std::uint32_t raw(std::size_t i) const { return is_half(d) ? h[i] : float_bits(f[i]); }
  // The bits x is stored as, rounded to nearest.
  std::uint32_t expected(float x) const { return is_half(d) ? encode(d, x) : float_bits(x); }
  void put(std::size_t i, float x) {
    if (is_half(d))
      h[i] = encode(d, x);
    else
      f[i] = x;
  }
  void append_bytes(std::vector<unsigned char>& out) const {
    const auto* p = static_cast<const unsigned char*>(is_half(d) ? static_cast<const void*>(h.data())
                                                                 : static_cast<const void*>(f.data()));
    out.insert(out.end(), p, p + size() * (is_half(d) ? 2 : 4));
  }
};

// ---- a tensor list with half dtypes beside its float32 reference ------------------

struct Spec {
  DType param = DType::bf16, grad = DType::same, state = DType::f32;
  bool master = false;
  StepControl control;
  int steps = 3;
  // Three chunks of 8192 (20000), and a second tensor that takes the list over
  // every optimizer's parallel threshold (SGD's 1 << 15).
  std::vector<std::size_t> sizes = {20000, 13001};
  // Grads: exact small multiples of 2^-7 (sums of squares exact in double).
  bool exact_grads = false;
};

template <class O>
constexpr bool has_p0 = std::is_same_v<O, gradstep::ProdigyOptions>;  // slot 1 starts as a copy of p

double param_value(std::size_t t, std::size_t i) { return std::sin(0.37 * double(i) + double(t)) * 0.8; }
double grad_value(std::size_t t, std::size_t i, int k, bool exact) {
  if (exact) return double(int((i * 37 + std::size_t(k) * 11 + t) % 512) - 256) / 128.0;
  return std::cos(1.3 * double(i) - double(t) + 0.7 * double(k)) * 0.5;
}

struct Lists {
  std::vector<Buf> p, g, s[gradstep::kMaxStates];
  std::vector<std::vector<float>> master;
  std::vector<TensorView> views;
};

// The outcome of a run: every buffer a step may write, after the last step.
struct Result {
  std::vector<unsigned char> bytes;
  std::size_t changed = 0;  // param elements that differ from the start
};

template <class O>
struct Pair {
  const Spec& spec;
  Lists a, r;  // a: the dtypes of spec; r: all float32, the reference
  unsigned mask;
  gradstep::SlotExtents extents;

  Pair(const O& o, const Spec& sp) : spec(sp), mask(gradstep::state_mask(o)), extents(gradstep::state_extents(o)) {
    const DType grad = spec.grad == DType::same ? spec.param : spec.grad;
    const DType state = spec.state == DType::same ? spec.param : spec.state;
    for (std::size_t t = 0; t < spec.sizes.size(); ++t) {
      const std::size_t n = spec.sizes[t];
      TensorView shape;
      shape.size = n;
      a.p.emplace_back();
      a.p.back().resize(spec.param, n);
      r.p.emplace_back();
      r.p.back().resize(DType::f32, n);
      a.g.emplace_back();
      a.g.back().resize(grad, n);
      r.g.emplace_back();
      r.g.back().resize(DType::f32, n);
      a.master.emplace_back(spec.master ? n : 0);
      for (std::size_t i = 0; i < n; ++i) {
        a.p[t].put(i, float(param_value(t, i)));
        if (spec.master) a.master[t][i] = float(param_value(t, i) + 1e-4);  // not a bf16 value
      }
      for (int k = 0; k < gradstep::kMaxStates; ++k) {
        const std::size_t m = (mask >> k) & 1u ? gradstep::slot_size(extents.slot[k], shape) : 0;
        a.s[k].emplace_back();
        a.s[k].back().resize(extents.slot[k].extent == gradstep::Extent::full ? state : DType::f32, m);
        r.s[k].emplace_back();
        r.s[k].back().resize(DType::f32, m);
        if (k == 1 && has_p0<O>)
          for (std::size_t i = 0; i < m; ++i) a.s[k][t].put(i, spec.master ? a.master[t][i] : a.p[t].get(i));
      }
      TensorView v;
      v.param = a.p[t].data();
      v.grad = a.g[t].data();
      v.size = n;
      v.dtype = spec.param;
      v.grad_dtype = spec.grad;
      v.state_dtype = spec.state;
      v.master = spec.master ? a.master[t].data() : nullptr;
      for (int k = 0; k < gradstep::kMaxStates; ++k) v.state[k] = a.s[k][t].size() ? a.s[k][t].data() : nullptr;
      a.views.push_back(v);
      TensorView w = v;
      w.param = r.p[t].data();
      w.grad = r.g[t].data();
      w.dtype = DType::f32;
      w.grad_dtype = DType::same;
      w.state_dtype = DType::same;
      w.master = nullptr;
      for (int k = 0; k < gradstep::kMaxStates; ++k) w.state[k] = r.s[k][t].size() ? r.s[k][t].data() : nullptr;
      r.views.push_back(w);
      // The reference of a run with a master is the float32 run of the master, never rounded.
      for (std::size_t i = 0; i < n; ++i) r.p[t].f[i] = spec.master ? a.master[t][i] : a.p[t].get(i);
    }
  }

  std::vector<unsigned char> bytes() const {
    std::vector<unsigned char> out;
    for (std::size_t t = 0; t < a.p.size(); ++t) {
      a.p[t].append_bytes(out);
      for (int k = 0; k < gradstep::kMaxStates; ++k) a.s[k][t].append_bytes(out);
      const auto* m = reinterpret_cast<const unsigned char*>(a.master[t].data());
      out.insert(out.end(), m, m + a.master[t].size() * 4);
    }
    return out;
  }
};

// Runs spec's steps of o on the half set and, each step, on the float32
// reference from the half set's widened values (param: from the master when
// there is one, which the reference then carries on unrounded; states: from
// the half set's, widened), and checks the half set holds the reference's
// results rounded to nearest (param, half states) or exactly (float32 states,
// the master, carried values, the grad norm); with stochastic rounding, the
// param is one of the two neighbours of the master (the caller compares bits).
template <class O>
Result run_pair(O o, const Spec& spec, const std::string& what) {
  Pair<O> pair(o, spec);
  Lists &a = pair.a, &r = pair.r;
  gradstep::TensorSet set(a.views.data(), a.views.size(), pair.mask, pair.extents);
  gradstep::TensorSet ref(r.views.data(), r.views.size(), pair.mask, pair.extents);
  O ro = o;
  std::size_t bad_param = 0, bad_state = 0, bad_master = 0, bad_report = 0;
  std::string first_bad;
  for (int k = 1; k <= spec.steps; ++k) {
    for (std::size_t t = 0; t < a.p.size(); ++t) {
      for (std::size_t i = 0; i < a.g[t].size(); ++i) {
        a.g[t].put(i, float(grad_value(t, i, k, spec.exact_grads)));
        r.g[t].f[i] = a.g[t].get(i);
        if (!spec.master) r.p[t].f[i] = a.p[t].get(i);
      }
      for (int j = 0; j < gradstep::kMaxStates; ++j)
        for (std::size_t i = 0; i < a.s[j][t].size(); ++i) r.s[j][t].f[i] = a.s[j][t].get(i);
    }
    const StepReport ra = set.step(o, k, spec.control), rr = ref.step(ro, k, spec.control);
    if (std::memcmp(ra.carried, rr.carried, sizeof ra.carried) != 0 ||
        std::memcmp(&ra.grad_norm, &rr.grad_norm, sizeof(double)) != 0 || ra.skipped != rr.skipped)
      ++bad_report;
    o = gradstep::with_carried(o, ra);
    ro = gradstep::with_carried(ro, rr);
    for (std::size_t t = 0; t < a.p.size(); ++t) {
      for (std::size_t i = 0; i < a.p[t].size(); ++i) {
        const float want = r.p[t].f[i];
        bool ok;
        if (spec.master && spec.control.rounding == Rounding::stochastic) {
          const std::uint32_t got = a.p[t].raw(i);
          ok = got == encode(spec.param, want, Mode::toward_zero) || got == encode(spec.param, want, Mode::away);
        } else {
          ok = a.p[t].raw(i) == a.p[t].expected(want);
        }
        if (!ok && bad_param++ == 0)
          first_bad = "param t" + std::to_string(t) + " i" + std::to_string(i) + " step " + std::to_string(k) +
                      ": got " + std::to_string(a.p[t].get(i)) + " want ~" + std::to_string(want);
        if (spec.master && float_bits(a.master[t][i]) != float_bits(want)) ++bad_master;
      }
      for (int j = 0; j < gradstep::kMaxStates; ++j)
        for (std::size_t i = 0; i < a.s[j][t].size(); ++i)
          if (a.s[j][t].raw(i) != a.s[j][t].expected(r.s[j][t].f[i]) && bad_state++ == 0 && first_bad.empty())
            first_bad = "state " + std::to_string(j) + " t" + std::to_string(t) + " i" + std::to_string(i) +
                        " step " + std::to_string(k) + ": got " + std::to_string(a.s[j][t].get(i)) + " want " +
                        std::to_string(r.s[j][t].f[i]);
    }
  }
  if (!first_bad.empty()) std::printf("  %s: %s (%zu params, %zu states)\n", what.c_str(), first_bad.c_str(), bad_param, bad_state);
  check(bad_param == 0, (what + ": the param is the float32 result rounded").c_str());
  check(bad_state == 0, (what + ": the states are the float32 results (rounded when half)").c_str());
  check(bad_master == 0, (what + ": the master is the float32 run").c_str());
  check(bad_report == 0, (what + ": carried values and the grad norm are the float32 run's").c_str());
  Result out{pair.bytes(), 0};
  for (std::size_t t = 0; t < a.p.size(); ++t)
    for (std::size_t i = 0; i < a.p[t].size(); ++i)
      out.changed += a.p[t].raw(i) != a.p[t].expected(float(param_value(t, i)));
  return out;
}

std::vector<gradstep::Isa> isas() { return gradstep::available_isas(); }
void restore_isa() { gradstep::set_isa(gradstep::isa_name(isas().back())); }

// run_pair on every ISA target and 1-4 threads; the bytes must agree across
// them all. Returns the first run's.
template <class O>
Result everywhere(const O& o, const Spec& spec, const std::string& what) {
  Result first;
  bool same = true, have = false;
  for (gradstep::Isa isa : isas()) {
    gradstep::set_isa(gradstep::isa_name(isa));
    for (int threads = 1; threads <= 4; ++threads) {
      gradstep::set_num_threads(threads);
      const Result got = run_pair(o, spec, what + " [" + gradstep::isa_name(isa) + ", " + std::to_string(threads) +
                                               " threads]");
      if (!have) first = got, have = true;
      same = same && got.bytes == first.bytes;
    }
  }
  restore_isa();
  check(same, (what + ": the same bits on every ISA target and thread count").c_str());
  check(first.changed > 0, (what + ": the steps moved the params").c_str());
  return first;
}

// ---- the tests ---------------------------------------------------------------------

gradstep::AdamOptions adam() {
  gradstep::AdamOptions o;
  o.lr = 1e-2;
  o.weight_decay = 1e-2;
  return o;
}
gradstep::SgdOptions sgd_momentum() {
  gradstep::SgdOptions o;
  o.lr = 0.05;
  o.momentum = 0.9;
  o.weight_decay = 1e-2;
  return o;
}
gradstep::ProdigyOptions prodigy() {
  gradstep::ProdigyOptions o;
  o.weight_decay = 1e-2;
  o.d0 = o.d = o.d_max = 1e-2;  // large enough that 3 steps move bf16 weights
  return o;
}
gradstep::LambOptions lamb() {
  gradstep::LambOptions o;
  o.lr = 1e-2;
  return o;
}

// 1. bf16 params, f32 states: each step is the float32 step rounded to nearest.
void bf16_params() {
  Spec spec;
  everywhere(adam(), spec, "bf16 adam");
  everywhere(sgd_momentum(), spec, "bf16 sgd momentum");
  everywhere(prodigy(), spec, "bf16 prodigy");
  everywhere(lamb(), spec, "bf16 lamb");
  spec.grad = DType::f32;
  everywhere(adam(), spec, "bf16 adam, f32 grads");
  spec.grad = DType::f16;
  everywhere(lamb(), spec, "bf16 lamb, f16 grads");
}

// 2. f16 params and f16 states: param and every state rounded after each step.
// Single-pass optimizers only: a multi-pass one (Lamb, Prodigy, D-Adaptation)
// stores its half states rounded at the end of the pass that updates them,
// and its later passes read the rounded values, so it is not the float32
// step rounded once (by an ulp with bf16 states; with f16 states a second
// moment that underflows in float16 reaches the update as 0).
void f16_states() {
  Spec spec;
  spec.param = DType::f16;
  spec.state = DType::same;
  everywhere(adam(), spec, "f16 adam, f16 states");
  everywhere(sgd_momentum(), spec, "f16 sgd momentum, f16 states");
  spec.param = DType::bf16;
  everywhere(adam(), spec, "bf16 adam, bf16 states");
}

// 3. f32 params with half grads: the float32 run with the widened grads, exactly.
void half_grads() {
  for (DType g : {DType::bf16, DType::f16}) {
    const std::string name = g == DType::bf16 ? "bf16" : "f16";
    Spec spec;
    spec.param = DType::f32;
    spec.grad = g;
    everywhere(adam(), spec, "f32 adam, " + name + " grads");
    everywhere(lamb(), spec, "f32 lamb (clipped), " + name + " grads");
    spec.control.max_grad_norm = 1.0;
    everywhere(sgd_momentum(), spec, "f32 sgd clipped, " + name + " grads");
  }
}

// 4. A float32 master: the master is the float32 run; the param its rounding.
void masters() {
  Spec spec;
  spec.master = true;
  everywhere(adam(), spec, "bf16 adam with a master");
  everywhere(prodigy(), spec, "bf16 prodigy with a master");
  spec.state = DType::same;
  everywhere(sgd_momentum(), spec, "bf16 sgd momentum with a master, bf16 states");
  spec.state = DType::f32;
  spec.param = DType::f16;
  everywhere(adam(), spec, "f16 adam with a master");

  spec.param = DType::bf16;
  spec.control.rounding = Rounding::stochastic;
  spec.control.seed = 1234;
  const Result a = everywhere(adam(), spec, "bf16 adam with a master, stochastic");
  gradstep::set_num_threads(3);
  const Result again = run_pair(adam(), spec, "bf16 adam with a master, stochastic, again");
  spec.control.seed = 1235;
  const Result other = run_pair(adam(), spec, "bf16 adam with a master, stochastic, another seed");
  check(again.bytes == a.bytes, "stochastic rounding: the same seed gives the same bits");
  check(other.bytes != a.bytes, "stochastic rounding: another seed gives other bits");
  // Stochastic is not nearest (the bits differ somewhere from the nearest run).
  spec.control.rounding = Rounding::nearest;
  check(run_pair(adam(), spec, "bf16 adam with a master, nearest").bytes != a.bytes,
        "stochastic rounding differs from nearest somewhere");
  spec.control.rounding = Rounding::stochastic;
  spec.param = DType::f16;
  everywhere(sgd_momentum(), spec, "f16 sgd momentum with a master, stochastic");
}

// 5. Stochastic rounding without a master: an update of a quarter ulp.
void quarter_ulp() {
  for (DType d : {DType::bf16, DType::f16}) {
    const std::string name = d == DType::bf16 ? "bf16" : "f16";
    const std::size_t n = 100000;
    const std::uint16_t one = encode(d, 1.0f), up = one + 1;
    // ulp above 1: 2^-7 (bf16), 2^-10 (f16); p -= lr * g with g = -ulp / 4.
    const float quarter = d == DType::bf16 ? 0x1p-9f : 0x1p-12f;
    check(widen(d, up) - 1.0f == 4.0f * quarter, (name + ": the reference's ulp above 1").c_str());
    gradstep::SgdOptions o;
    o.lr = 1.0;
    std::vector<std::uint16_t> first;
    bool same = true, nearest_still = true, neighbours = true, within = true, tensors_differ = true;
    bool chunks_differ = true, steps_differ = false, seeds_differ = false;
    for (gradstep::Isa isa : isas()) {
      gradstep::set_isa(gradstep::isa_name(isa));
      for (int threads = 1; threads <= 4; ++threads) {
        gradstep::set_num_threads(threads);
        for (Rounding rounding : {Rounding::nearest, Rounding::stochastic}) {
          // Two identical tensors: the key differs by tensor, so their bits do.
          std::vector<std::uint16_t> p(2 * n, one);
          std::vector<float> g(2 * n, -quarter);
          TensorView v[2];
          for (int t = 0; t < 2; ++t) {
            v[t].param = p.data() + t * n;
            v[t].grad = g.data() + t * n;
            v[t].size = n;
            v[t].dtype = d;
            v[t].grad_dtype = DType::f32;
          }
          gradstep::TensorSet set(v, 2, gradstep::state_mask(o));
          StepControl c;
          c.rounding = rounding;
          c.seed = 42;
          set.step(o, 1, c);
          if (rounding == Rounding::nearest) {
            for (std::uint16_t x : p) nearest_still = nearest_still && x == one;
            continue;
          }
          std::size_t ups[2] = {0, 0};
          for (std::size_t i = 0; i < 2 * n; ++i) {
            neighbours = neighbours && (p[i] == one || p[i] == up);
            ups[i / n] += p[i] == up;
          }
          // Binomial(n, 1/4): sigma = sqrt(n * 3/16) ~ 137; 5 sigma.
          const double sigma = std::sqrt(double(n) * 0.1875);
          for (std::size_t u : ups) within = within && std::fabs(double(u) - 0.25 * double(n)) <= 5.0 * sigma;
          tensors_differ = tensors_differ && std::memcmp(p.data(), p.data() + n, n * 2) != 0;
          // Keyed by the element's index in its tensor, not in its chunk (8192).
          chunks_differ = chunks_differ && std::memcmp(p.data(), p.data() + 8192, 8192 * 2) != 0;
          // Keyed by the step: the same update as step 2 rounds with other bits.
          if (isa == isas().front() && threads == 1) {
            std::vector<std::uint16_t> q(2 * n, one);
            for (int t = 0; t < 2; ++t) v[t].param = q.data() + t * n;
            gradstep::TensorSet again(v, 2, gradstep::state_mask(o));
            again.step(o, 2, c);
            steps_differ = q != p;
            c.seed = 43;
            std::vector<std::uint16_t> q2(2 * n, one);
            for (int t = 0; t < 2; ++t) v[t].param = q2.data() + t * n;
            gradstep::TensorSet other(v, 2, gradstep::state_mask(o));
            other.step(o, 1, c);
            seeds_differ = q2 != p;
          }
          if (first.empty()) {
            first = p;
            std::printf("  %s quarter ulp, stochastic: %zu and %zu of %zu moved up\n", name.c_str(), ups[0], ups[1], n);
          }
          same = same && p == first;
        }
      }
    }
    restore_isa();
    check(nearest_still, (name + ": a quarter-ulp update never moves a param rounded to nearest").c_str());
    check(neighbours, (name + ": stochastic rounding gives one of the two neighbours").c_str());
    check(within, (name + ": stochastic rounding moves 1/4 of the params up (5 sigma)").c_str());
    check(tensors_differ, (name + ": two tensors of the same values round with different bits").c_str());
    check(chunks_differ, (name + ": chunks of the same values round with different bits").c_str());
    check(steps_differ && seeds_differ, (name + ": another step or seed rounds with other bits").c_str());
    check(same, (name + ": stochastic bits the same on every ISA target and thread count").c_str());
  }
}

// 6. Passes that write nothing leave every buffer's bits.
void read_only() {
  gradstep::set_num_threads(2);
  {  // A step skipped for a NaN grad: bf16 params, bf16 states and the master untouched.
    Spec spec;
    spec.state = DType::same;
    spec.master = true;
    const gradstep::AdamOptions o = adam();
    Pair<gradstep::AdamOptions> pair(o, spec);
    Lists& a = pair.a;
    for (std::size_t t = 0; t < a.g.size(); ++t)
      for (std::size_t i = 0; i < a.g[t].size(); ++i) a.g[t].put(i, float(grad_value(t, i, 1, false)));
    gradstep::TensorSet set(a.views.data(), a.views.size(), pair.mask);
    set.step(o, 1);  // states not zero
    const std::vector<unsigned char> before = pair.bytes();
    a.g[0].put(12345, NAN);
    StepControl c;
    c.skip_nonfinite = true;
    const StepReport r = set.step(o, 2, c);
    check(r.skipped && r.found_inf && pair.bytes() == before,
          "a step skipped for a NaN bf16 grad leaves bf16 params, bf16 states and masters bit-identical");
  }
  {  // Lamb with lr = 0 (four passes, moments stored): no pass changes the
     // master, so the bf16 param, deliberately not its master's rounding, is
     // never written; the states are.
    Spec spec;
    spec.master = true;
    gradstep::LambOptions o = lamb();
    o.lr = 0.0;
    Pair<gradstep::LambOptions> pair(o, spec);
    Lists& a = pair.a;
    for (std::size_t t = 0; t < a.p.size(); ++t)
      for (std::size_t i = 0; i < a.p[t].size(); ++i) {
        a.p[t].h[i] = 0x7fc0;  // NaN, which no rounding of a master gives
        a.g[t].put(i, float(grad_value(t, i, 1, false)));
      }
    const std::vector<std::vector<float>> masters = a.master;
    gradstep::TensorSet set(a.views.data(), a.views.size(), pair.mask);
    set.step(o, 1);
    bool untouched = a.master == masters, moved_states = false;
    for (std::size_t t = 0; t < a.p.size(); ++t) {
      for (std::uint16_t x : a.p[t].h) untouched = untouched && x == 0x7fc0;
      for (float x : a.s[0][t].f) moved_states = moved_states || x != 0.0f;
    }
    check(untouched && moved_states, "lamb lr = 0 with a master: param and master never written, states are");
  }
  // The grad norm (clipping) from half grads: exact multiples of 2^-7, whose
  // squares add up exactly in double in any order.
  for (DType g : {DType::bf16, DType::f16}) {
    Spec spec;
    spec.grad = g;
    spec.exact_grads = true;
    spec.control.max_grad_norm = 1.0;
    gradstep::SgdOptions o = sgd_momentum();
    Pair<gradstep::SgdOptions> pair(o, spec);
    Lists& a = pair.a;
    double sum = 0.0;
    bool exact = true;
    for (std::size_t t = 0; t < a.g.size(); ++t)
      for (std::size_t i = 0; i < a.g[t].size(); ++i) {
        const double x = grad_value(t, i, 1, true);
        a.g[t].put(i, float(x));
        exact = exact && double(a.g[t].get(i)) == x;
        sum += x * x;
      }
    gradstep::TensorSet set(a.views.data(), a.views.size(), pair.mask);
    const StepReport r = set.step(o, 1, spec.control);
    const std::string name = g == DType::bf16 ? "bf16" : "f16";
    check(exact && r.grad_norm == std::sqrt(sum) && r.grad_norm > 1.0,
          (name + " grads: the grad norm is the double norm of the widened grads").c_str());
    spec.param = DType::f32;
    everywhere(sgd_momentum(), spec, "f32 sgd clipped, exact " + name + " grads");
  }
}

// Every byte of some buffers.
template <class... V>
std::vector<unsigned char> snapshot(const V&... v) {
  std::vector<unsigned char> out;
  auto add = [&](const auto& x) {
    const auto* p = reinterpret_cast<const unsigned char*>(x.data());
    out.insert(out.end(), p, p + x.size() * sizeof(x[0]));
  };
  (add(v), ...);
  return out;
}

// 7 and 8. Refused views and controls, before any write.
void validation() {
  const std::size_t n = 64;
  std::vector<std::uint16_t> hp(n, 0x3f80), hg(n, 0x3f80), hs0(n, 0x3f80), hs1(n, 0x3f80);
  std::vector<float> fp(n, 1.0f), fg(n, 0.5f), fs0(n, 0.25f), fs1(n, 0.25f), master(n, 1.0f);
  std::vector<double> dp(n, 1.0), ds0(n, 0.0), ds1(n, 0.0);
  auto all = [&] { return snapshot(hp, hg, hs0, hs1, fp, fg, fs0, fs1, master, dp, ds0, ds1); };
  const std::vector<unsigned char> before = all();
  const gradstep::AdamOptions o = adam();
  auto bf16_view = [&] {
    TensorView v;
    v.param = hp.data();
    v.grad = hg.data();
    v.state[0] = fs0.data();
    v.state[1] = fs1.data();
    v.size = n;
    v.dtype = DType::bf16;
    v.state_dtype = DType::f32;
    return v;
  };
  auto refused = [&](TensorView v, const char* needle, const char* what) {
    check(throws_invalid([&] { gradstep::step(o, &v, 1, 1); }, needle) && all() == before, what);
  };
  {
    TensorView v;
    v.param = dp.data();
    v.grad = hg.data();
    v.state[0] = ds0.data();
    v.state[1] = ds1.data();
    v.size = n;
    v.dtype = DType::f64;
    v.grad_dtype = DType::bf16;
    refused(v, "grad dtype", "a f64 param with bf16 grads is refused, nothing written");
    v.grad_dtype = DType::f16;
    refused(v, "grad dtype", "a f64 param with f16 grads is refused, nothing written");
    v.grad_dtype = DType::same;
    v.state_dtype = DType::bf16;
    refused(v, "state dtype", "a f64 param with bf16 states is refused, nothing written");
  }
  {
    TensorView v = bf16_view();
    v.grad_dtype = DType::f64;
    refused(v, "grad dtype", "a bf16 param with f64 grads is refused, nothing written");
    v = bf16_view();
    v.state_dtype = DType::f16;
    v.state[0] = hs0.data();
    v.state[1] = hs1.data();
    refused(v, "state dtype", "f16 states on a bf16 param are refused, nothing written");
    v.state_dtype = DType::f64;
    refused(v, "state dtype", "f64 states on a bf16 param are refused, nothing written");
    v = bf16_view();
    v.dtype = DType(200);
    refused(v, "unknown dtype", "an unknown dtype is refused, nothing written");
  }
  {
    TensorView v;
    v.param = fp.data();
    v.grad = fg.data();
    v.state[0] = fs0.data();
    v.state[1] = fs1.data();
    v.size = n;
    v.master = master.data();
    refused(v, "master", "a master on a f32 param is refused, nothing written");
    v.master = nullptr;
    v.state_dtype = DType::bf16;
    refused(v, "state dtype", "bf16 states on a f32 param are refused, nothing written");
  }
  {  // Adafactor's row_var and col_var (extents rows and cols) must be f32 for a half param.
    gradstep::AdafactorOptions af;
    TensorView v;
    v.param = hp.data();
    v.grad = hg.data();
    v.size = n;
    v.batch = 1;
    v.rows = 8;
    v.cols = 8;
    v.dtype = DType::bf16;
    v.state[0] = hs0.data();  // 8 rows
    v.state[1] = hs1.data();  // 8 cols
    for (DType state : {DType::same, DType::bf16}) {
      v.state_dtype = state;
      check(throws_invalid([&] { gradstep::step(af, &v, 1, 1); }, "another extent") && all() == before,
            "a bf16 row_var (not the param's extent) is refused, nothing written");
    }
    v.state[0] = fs0.data();
    v.state[1] = fs1.data();
    v.state_dtype = DType::f32;
    gradstep::step(af, &v, 1, 1);
    check(hp != std::vector<std::uint16_t>(n, 0x3f80) && fs0 != std::vector<float>(n, 0.25f),
          "adafactor on a bf16 matrix with f32 row_var and col_var steps");
    hp.assign(n, 0x3f80);
    fs0.assign(n, 0.25f);
    fs1.assign(n, 0.25f);
  }
  {  // A step that reduces between passes (Lamb's norms) with bf16 states: refused, nothing written.
    gradstep::LambOptions lamb;
    lamb.lr = 0.01;
    TensorView v = bf16_view();
    v.state[0] = hs0.data();
    v.state[1] = hs1.data();
    v.state_dtype = DType::bf16;
    check(throws_invalid([&] { gradstep::step(lamb, &v, 1, 1); }, "reduces over its states") && all() == before,
          "lamb with bf16 states is refused (its passes would read them rounded), nothing written");
    v = bf16_view();
    gradstep::step(lamb, &v, 1, 1);
    check(hp != std::vector<std::uint16_t>(n, 0x3f80), "lamb on bf16 params with f32 states steps");
    hp.assign(n, 0x3f80);
    fs0.assign(n, 0.25f);
    fs1.assign(n, 0.25f);
  }
  {  // An invalid Rounding value: refused by the step, before any write.
    TensorView v = bf16_view();
    v.master = master.data();
    gradstep::TensorSet set(&v, 1, gradstep::state_mask(o));
    StepControl c;
    c.rounding = Rounding(7);
    check(throws_invalid([&] { set.step(o, 1, c); }, "rounding") && all() == before,
          "an invalid Rounding is refused, nothing written");
    c.rounding = Rounding::stochastic;
    set.step(o, 1, c);
    check(all() != before, "the same set steps with a valid Rounding");
  }
  hp.assign(n, 0x3f80);
  fs0.assign(n, 0.25f);
  fs1.assign(n, 0.25f);
  master.assign(n, 1.0f);
  const std::vector<unsigned char> clean = all();
  {  // 8. A master overlapping its param, a state, another tensor's master, or a grad.
    TensorView v = bf16_view();
    v.master = reinterpret_cast<float*>(hp.data()) + 4;
    check(throws_invalid([&] { gradstep::step(o, &v, 1, 1); }, "overlap") && all() == clean,
          "a master overlapping its param is refused, nothing written");
    v.master = fs1.data() + n - 1;  // its first element is the state's last
    check(throws_invalid([&] { gradstep::step(o, &v, 1, 1); }, "overlap") && all() == clean,
          "a master overlapping a state is refused, nothing written");
    v.master = master.data();
    v.grad = master.data() + 10;
    v.grad_dtype = DType::f32;
    check(throws_invalid([&] { gradstep::step(o, &v, 1, 1); }, "grad overlaps") && all() == clean,
          "a grad overlapping the master is refused, nothing written");
    TensorView two[2] = {bf16_view(), bf16_view()};
    two[0].size = two[1].size = n / 2;
    two[1].param = hp.data() + n / 2;
    two[1].grad = hg.data() + n / 2;
    two[1].state[0] = fs0.data() + n / 2;
    two[1].state[1] = fs1.data() + n / 2;
    two[0].master = master.data();
    two[1].master = master.data() + n / 2 - 1;
    check(throws_invalid([&] { gradstep::TensorSet(two, 2, gradstep::state_mask(o)); }, "overlap") && all() == clean,
          "two tensors' masters overlapping are refused, nothing written");
    two[1].master = master.data() + n / 2;
    gradstep::TensorSet ok(two, 2, gradstep::state_mask(o));
    ok.step(o, 1);
    check(all() != clean, "adjacent masters are accepted");
  }
}

}  // namespace

void run_half_tests() {
  const int threads = gradstep::num_threads();
  reference_conversions();
  bf16_params();
  f16_states();
  half_grads();
  masters();
  quarter_ulp();
  read_only();
  validation();
  gradstep::set_num_threads(threads);
}

}  // namespace gradstep_test

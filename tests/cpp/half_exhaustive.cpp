// Standalone check of cpp/src/algorithms/half.inl (not yet part of the
// tests/cpp build; issue 13 wires it in): float -> float16 against F16C's
// vcvtps2ph for all 2^32 float32 bit patterns, float16 -> float for all 2^16,
// float -> bfloat16 against a float64 nearest-neighbour reference (sampled,
// all denormals and specials), stochastic rounding's exact up-counts.
//   g++ -std=c++20 -O2 -mf16c -mavx2 tests/cpp/half_exhaustive.cpp -o /tmp/h && /tmp/h
// (about 12 s on the AMD EPYC here.)
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <cmath>
#include <immintrin.h>
namespace h {
#include "../../cpp/src/algorithms/half.inl"
}
static uint16_t ref_bf16(float x) {  // double-based reference: nearest of the two bf16 neighbours
  uint32_t u; memcpy(&u, &x, 4);
  if (std::isnan(x)) return uint16_t((u >> 16) | 0x40);
  uint32_t lo = u & 0xffff0000u, hi = lo + 0x10000u;
  float a, b; memcpy(&a, &lo, 4); memcpy(&b, &hi, 4);
  if (std::isinf(x)) return uint16_t(u >> 16);
  double da = std::fabs((double)x - (double)a), db = std::isinf(b) ? INFINITY : std::fabs((double)b - (double)x);
  // b may be inf: then compare against the would-be next value 2^128 in magnitude
  if (std::isinf(b)) { double next = std::ldexp(1.0, 128); db = std::fabs(next - std::fabs((double)x)); }
  if (da < db) return uint16_t(lo >> 16);
  if (db < da) return uint16_t(hi >> 16);
  return uint16_t(((lo >> 16) & 1) ? hi >> 16 : lo >> 16);
}
int main() {
  long bad16 = 0, badbf = 0, badback = 0;
  for (uint64_t i = 0; i < (1ull << 32); ++i) {
    uint32_t u = uint32_t(i); float x; memcpy(&x, &u, 4);
    uint16_t mine = h::float_to_f16(x);
    uint16_t hw = _cvtss_sh(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    if (mine != hw && bad16++ < 5) printf("f16 %08x mine %04x hw %04x\n", u, mine, hw);
    if ((i & 0xff) == 0 || (u & 0x7f800000u) == 0 || (u & 0x7f800000u) == 0x7f800000u || (u & 0x7f800000u) == 0x7f000000u) {
      uint16_t b = h::float_to_bf16(x), r = ref_bf16(x);
      if (b != r && badbf++ < 5) printf("bf16 %08x mine %04x ref %04x\n", u, b, r);
    }
  }
  for (uint32_t v = 0; v < 65536; ++v) {
    float a = h::f16_to_float(uint16_t(v)), b = _cvtsh_ss(uint16_t(v));
    uint32_t ua, ub; memcpy(&ua, &a, 4); memcpy(&ub, &b, 4);
    if (ua != ub && badback++ < 5) printf("f16->f32 %04x mine %08x hw %08x\n", v, ua, ub);
  }
  // stochastic: exact counts over all random values that matter
  long badsr = 0;
  for (uint32_t t = 0; t < 200000; ++t) {
    uint32_t u = h::mix32(t * 2654435761u) & 0xbfffffffu;  // finite-ish
    if ((u & 0x7f800000u) == 0x7f800000u) continue;
    float x; memcpy(&x, &u, 4);
    // bf16: over all 2^16 top halves
    long ups = 0;
    for (uint32_t r = 0; r < 65536; ++r) ups += h::float_to_bf16_stochastic(x, r << 16) != uint16_t(u >> 16);
    if (ups != long(u & 0xffff) && badsr++ < 5) printf("bf16 sr %08x ups %ld want %u\n", u, ups, u & 0xffff);
  }
  for (uint32_t t = 0; t < 20000; ++t) {
    uint32_t u = h::mix32(t * 2246822519u);
    u = (u & 0x807fffffu) | ((100u + (t % 43)) << 23);  // exponents 100..142: subnormal and normal float16
    float x; memcpy(&x, &u, 4);
    // count ups over r = k << 19 (k < 2^13) for normal, exact; for subnormals compare probability with fraction
    double lo_val; uint16_t down = uint16_t(h::float_to_f16_stochastic(x, 0xffffffffu));
    long ups = 0; const int K = 1 << 13;
    for (int k = 0; k < K; ++k) ups += h::float_to_f16_stochastic(x, uint32_t(k) << 19) != down;
    // expected: (x - down) / ulp * K within 1
    float fd = _cvtsh_ss(down); uint16_t upb = uint16_t(down + 1); float fu = _cvtsh_ss(upb);
    double want = ((double)std::fabs(x) - std::fabs((double)fd)) / (std::fabs((double)fu) - std::fabs((double)fd)) * K;
    if (std::isfinite(fu) && std::fabs(ups - want) > 1.0 && badsr++ < 10) printf("f16 sr %08x ups %ld want %.2f\n", u, ups, want);
    (void)lo_val;
  }
  printf("f16 mismatches %ld, bf16 %ld, f16->f32 %ld, sr %ld\n", bad16, badbf, badback, badsr);
  return bad16 || badbf || badback || badsr;
}

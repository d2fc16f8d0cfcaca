// bfloat16 and float16 storage: conversions to and from float and the
// random bits of stochastic rounding (included inside the per-target
// namespace, as every algorithms/*.inl).
//
// Every function is integer arithmetic on the IEEE bit patterns, written
// without branches (selects only), so the compiler vectorizes the loops that
// call them on every target, and no result depends on the floating-point
// environment: a process that sets flush-to-zero or denormals-are-zero
// (torch.set_flush_denormal) gets the same bits. Hardware converts are not
// used for that reason: AVX-512 BF16's vcvtneps2bf16 treats float32
// denormal inputs as zero, which the integer form does not.
//
// Rounding to nearest (ties to even) is the IEEE conversion (numpy's
// float16 astype, ml_dtypes.bfloat16, torch's .to()). Stochastic rounding
// rounds x to one of its two neighbours a and b (a <= x <= b) with the
// probabilities (b - x) / (b - a) and (x - a) / (b - a), decided by 32
// random bits: unbiased in expectation, so an update smaller than half an
// ulp still moves a weight on average. NaN stays a (quiet) NaN of the same
// sign; infinities stay infinities.

inline std::uint32_t bits_of(float x) { return __builtin_bit_cast(std::uint32_t, x); }
inline float float_of(std::uint32_t u) { return __builtin_bit_cast(float, u); }

// c ? a : b as bit arithmetic: GCC leaves some chains of ?: as branches,
// which stop a loop from vectorizing.
inline std::uint32_t select(bool c, std::uint32_t a, std::uint32_t b) { return b ^ ((a ^ b) & (0u - std::uint32_t(c))); }

// ---- bfloat16: the upper 16 bits of a float32 -------------------------------

inline float bf16_to_float(std::uint16_t h) { return float_of(std::uint32_t(h) << 16); }

// Keeps NaN a quiet NaN (sets the top mantissa bit), which truncation alone
// could turn into an infinity (a NaN whose payload sits in the low 16 bits).
inline std::uint16_t bf16_nan_or(std::uint32_t u, std::uint32_t rounded) {
  const bool nan = (u & 0x7fffffffu) > 0x7f800000u;
  return std::uint16_t(select(nan, (u >> 16) | 0x0040u, rounded));
}

inline std::uint16_t float_to_bf16(float x) {
  const std::uint32_t u = bits_of(x);
  // Adding 0x7fff rounds up exactly the values above the midpoint; the
  // lowest kept bit adds the one more that makes a tie round to even. A
  // carry out of the mantissa steps the exponent, up to infinity: correct.
  return bf16_nan_or(u, (u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

// random: 32 uniform bits; its top 16 decide. The magnitude rounds away from
// zero when they are below the 16 dropped bits: with probability
// dropped / 2^16, the distance to the lower neighbour over the ulp.
inline std::uint16_t float_to_bf16_stochastic(float x, std::uint32_t random) {
  const std::uint32_t u = bits_of(x);
  return bf16_nan_or(u, (u + (random >> 16)) >> 16);
}

// ---- float16 -----------------------------------------------------------------

inline float f16_to_float(std::uint16_t h) {
  const std::uint32_t sign = std::uint32_t(h & 0x8000u) << 16;
  const std::uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
  // normal: rebias the exponent (127 - 15 = 112); inf/NaN: all-ones exponent
  const std::uint32_t normal = ((exp + 112u) << 23) | (mant << 13);
  // infinity, or NaN made quiet (the top mantissa bit), as F16C's vcvtph2ps does
  const std::uint32_t special = 0x7f800000u | (mant << 13) | select(mant != 0, 0x400000u, 0u);
  // subnormal: mant * 2^-24, exact in float (an integer below 2^10 times a power of two)
  const float sub = float(int(mant)) * 5.9604644775390625e-08f;
  const std::uint32_t magnitude = select(exp == 0, bits_of(sub), select(exp == 31, special, normal));
  return float_of(sign | magnitude);
}

// |x| (as bits, below 65536 in value) to float16 magnitude bits: the bits
// kept by truncation, plus `up(fraction, kept)` (0 or 1), fraction
// being the dropped part as a 32-bit fixed-point number in [0, 1) of an ulp
// (exact down to 2^-33; below, truncated, and far below half an ulp).
template <class Up>
inline std::uint32_t f16_magnitude(std::uint32_t a, Up&& up) {
  const std::uint32_t exp = a >> 23;
  // Normal float16 (float32 exponent 113..142): drop 13 mantissa bits and
  // rebias; a carry from rounding steps the exponent (up to 0x7c00, inf).
  const std::uint32_t normal_kept = (a - (112u << 23)) >> 13;
  const std::uint32_t normal_fraction = (a & 0x1fffu) << 19;
  // Subnormal float16 (float32 exponent <= 112): the value is
  // M * 2^(e - 150), M the 24-bit significand and e = max(exp, 1), so the
  // float16 significand is M * 2^(e - 126): M shifted right by 126 - e >= 14.
  const std::uint32_t significand = (a & 0x7fffffu) | select(exp != 0, 0x800000u, 0u);
  const std::uint32_t shift = 126u - select(exp == 0, 1u, select(exp > 126u, 126u, exp));
  const std::uint32_t narrow = select(shift < 32u, shift, 31u);  // keeps the shifts below defined
  const std::uint32_t sub_kept = select(shift < 32u, significand >> narrow, 0u);
  const std::uint32_t below = select(shift < 32u, 0u, select(shift - 32u > 31u, 31u, shift - 32u));
  // (32 - narrow) & 31: a normal input (|x| >= 0.5) has narrow 0, and a shift
  // by 32 is undefined; its masked part is 0 then, and 0 << 0 is that 0.
  const std::uint32_t sub_fraction = select(shift < 32u,
                                            (significand & ((1u << narrow) - 1u)) << ((32u - narrow) & 31u),
                                            significand >> below);
  const bool normal = exp >= 113u;
  const std::uint32_t kept = select(normal, normal_kept, sub_kept);
  return kept + std::uint32_t(up(select(normal, normal_fraction, sub_fraction), kept));
}

// The float16 bits of x with sign, for a finite |x| below 65536 `magnitude`;
// infinities and NaN (quiet, payload kept where it fits) from x's bits, and
// 65536 and above to infinity.
inline std::uint16_t f16_finish(std::uint32_t u, std::uint32_t magnitude) {
  const std::uint32_t a = u & 0x7fffffffu;
  const std::uint32_t sign = (u >> 16) & 0x8000u;
  const std::uint32_t special = select(a > 0x7f800000u, 0x7e00u | ((a >> 13) & 0x3ffu), 0x7c00u);
  return std::uint16_t(sign | select(a >= 0x47800000u, special, magnitude));
}

inline std::uint16_t float_to_f16(float x) {
  const std::uint32_t u = bits_of(x);
  const std::uint32_t a = u & 0x7fffffffu;
  // Ties to even: up above the midpoint (2^31), or at it when the kept bits are odd.
  const std::uint32_t magnitude = f16_magnitude(select(a < 0x47800000u, a, 0u), [](std::uint32_t fraction,
                                                                             std::uint32_t kept) {
    return (std::uint32_t(fraction > 0x80000000u) | (std::uint32_t(fraction == 0x80000000u) & kept)) & 1u;
  });
  return f16_finish(u, magnitude);
}

// random: 32 uniform bits. The magnitude rounds away from zero when they are
// below the fraction: with probability fraction / 2^32, the distance to the
// lower neighbour over the ulp. From 65504 (the largest float16) the upper
// neighbour is infinity.
inline std::uint16_t float_to_f16_stochastic(float x, std::uint32_t random) {
  const std::uint32_t u = bits_of(x);
  const std::uint32_t a = u & 0x7fffffffu;
  const std::uint32_t magnitude = f16_magnitude(select(a < 0x47800000u, a, 0u), [random](std::uint32_t fraction,
                                                                                  std::uint32_t) {
    return std::uint32_t(random < fraction);
  });
  return f16_finish(u, magnitude);
}

// ---- random bits keyed by (key, element) ----------------------------------------

// A 32-bit integer hash with low bias ("lowbias32", from Chris Wellons' hash
// prospector, public domain): 2 multiplies, vectorizable on every target.
inline std::uint32_t mix32(std::uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  x ^= x >> 16;
  return x;
}

// The key of one tensor in one step, from the run's seed: SplitMix64's
// finalizer over each input in turn (scalar, once per tensor and step).
inline std::uint64_t mix64(std::uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
inline std::uint64_t rounding_key(std::uint64_t seed, std::uint64_t step, std::uint64_t tensor) {
  return mix64(mix64(mix64(seed) ^ step) ^ tensor);
}

// 32 random bits for element i of the tensor keyed by key: the same for a
// given (seed, step, tensor, element) whichever target, thread or chunk
// computes it, so stochastic rounding is reproducible and resumable.
inline std::uint32_t random_bits(std::uint64_t key, std::uint64_t i) {
  const std::uint32_t k0 = std::uint32_t(key), k1 = std::uint32_t(key >> 32);
  return mix32(mix32(std::uint32_t(i) ^ k0) + (std::uint32_t(i >> 32) ^ k1));
}

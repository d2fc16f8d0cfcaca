// Helpers shared by the kernels (included inside the per-target namespace).

template <bool B>
struct Flag {
  static constexpr bool value = B;
};

// Turn a run-time flag into a compile-time one, so each combination of
// options gets its own branch-free loop that the compiler vectorizes.
template <class F>
inline void with_flag(bool b, F&& f) {
  if (b)
    f(Flag<true>{});
  else
    f(Flag<false>{});
}

inline float sqrt_(float x) { return __builtin_sqrtf(x); }
inline double sqrt_(double x) { return __builtin_sqrt(x); }

// torch.maximum: NaN in either operand propagates.
template <class T>
inline T maximum_nan(T a, T b) {
  return (a > b || a != a) ? a : b;
}

// ---- bf16 and f16 storage: chunks computed in float32 ------------------------
//
// A tensor with a bf16/f16 param, grad or state (or a float32 master copy)
// is updated one chunk at a time through float32 scratch: its half buffers
// are widened (exactly), the optimizer's float32 code runs on the scratch as
// on any float32 tensor, and what it changed is rounded back: the param to
// nearest or stochastically (Job::rounding), from the master when there is
// one (which gets the float32 result itself), the states to nearest. So
// every optimizer, every pass of it, gets the half dtypes from this one
// place, with float32's bits on every target; the element arithmetic is the
// float32 kernel's.
//
// In a step of several passes a buffer is written back only if its chunk
// changed (a pass that only reads the param, as a reduction does, writes
// nothing): compared as bits with what it was widened from, so the check is
// exact for NaN and -0 too. A one-pass step writes back what it staged.
//
// The kernel sees a view whose staged pointers are offset by -begin, so its
// indices [begin, end) land in the scratch: the element index stays the
// tensor's, which strided and row/column slots, and the rounding key, need.
// (The offset pointer is never dereferenced outside the scratch.)

inline bool is_half(DType d) { return d == DType::bf16 || d == DType::f16; }

// Whether the chunks of t go through float32 scratch.
inline bool staged(const TensorView& t) {
  return is_half(t.dtype) || is_half(t.grad_dtype) || is_half(t.state_dtype) || t.master != nullptr;
}

inline void widen(DType d, const void* from, std::size_t n, float* to) {
  const auto* h = static_cast<const std::uint16_t*>(from);
  if (d == DType::bf16)
    for (std::size_t i = 0; i < n; ++i) to[i] = bf16_to_float(h[i]);
  else if (d == DType::f16)
    for (std::size_t i = 0; i < n; ++i) to[i] = f16_to_float(h[i]);
  else
    for (std::size_t i = 0; i < n; ++i) to[i] = static_cast<const float*>(from)[i];
}

// Whether x[0, n) differs, as bits, from the buffer it was widened from.
inline bool changed(DType d, const void* from, std::size_t n, const float* x) {
  const auto* h = static_cast<const std::uint16_t*>(from);
  std::uint32_t diff = 0;
  if (d == DType::bf16)
    for (std::size_t i = 0; i < n; ++i) diff |= bits_of(x[i]) ^ bits_of(bf16_to_float(h[i]));
  else if (d == DType::f16)
    for (std::size_t i = 0; i < n; ++i) diff |= bits_of(x[i]) ^ bits_of(f16_to_float(h[i]));
  else
    for (std::size_t i = 0; i < n; ++i) diff |= bits_of(x[i]) ^ bits_of(static_cast<const float*>(from)[i]);
  return diff != 0;
}

inline void narrow_nearest(DType d, const float* x, std::size_t n, void* to) {
  auto* h = static_cast<std::uint16_t*>(to);
  if (d == DType::bf16)
    for (std::size_t i = 0; i < n; ++i) h[i] = float_to_bf16(x[i]);
  else if (d == DType::f16)
    for (std::size_t i = 0; i < n; ++i) h[i] = float_to_f16(x[i]);
  else
    for (std::size_t i = 0; i < n; ++i) static_cast<float*>(to)[i] = x[i];
}

// Elements [begin, begin + n) of a tensor keyed by key, rounded stochastically.
inline void narrow_stochastic(DType d, const float* x, std::size_t n, std::uint64_t key, std::size_t begin,
                              void* to) {
  auto* h = static_cast<std::uint16_t*>(to);
  if (d == DType::bf16)
    for (std::size_t i = 0; i < n; ++i) h[i] = float_to_bf16_stochastic(x[i], random_bits(key, begin + i));
  else
    for (std::size_t i = 0; i < n; ++i) h[i] = float_to_f16_stochastic(x[i], random_bits(key, begin + i));
}

inline std::size_t element_size(DType d) { return d == DType::f64 ? 8 : is_half(d) ? 2 : 4; }

template <class T>
inline T* offset(T* p, DType d, std::size_t begin) {
  using Byte = std::conditional_t<std::is_const_v<T>, const char, char>;
  return reinterpret_cast<T*>(reinterpret_cast<Byte*>(p) + begin * element_size(d));
}

// The tensor (its index in the job) whose chunk is being staged on this
// thread, for group_options_of: the kernel is handed a copy of its view.
constexpr std::size_t kNotStaged = ~std::size_t(0);
thread_local std::size_t staged_tensor = kNotStaged;

// body(float*, view, begin, end, chunk) on chunk c of tensor t, staged.
template <class Body>
inline void staged_chunk(const detail::Job& job, const TensorView& t, std::size_t c, std::size_t b, std::size_t e,
                         Body&& body) {
  const std::size_t n = e - b;
  const std::size_t tensor = job.chunks[c].tensor;
  TensorView v = t;
  v.dtype = v.grad_dtype = v.state_dtype = DType::f32;
  v.master = nullptr;
  // Scratch: the param, the grad if not float32, each full-size half state.
  int full_half[kMaxStates];
  int halves = 0;
  if (is_half(t.state_dtype))
    for (int k = 0; k < kMaxStates; ++k)
      if (t.state[k] != nullptr) full_half[halves++] = k;
  const bool grad_staged = t.grad != nullptr && t.grad_dtype != DType::f32;
  const bool param_staged = is_half(t.dtype) || t.master != nullptr;
  float* scratch = detail::stage_scratch(n * std::size_t(2 + halves));
  float* p = scratch;
  float* g = scratch + n;
  const DType param_source = t.master != nullptr ? DType::f32 : t.dtype;
  const void* param_from = t.master != nullptr ? static_cast<const void*>(t.master + b) : offset(t.param, t.dtype, b);
  if (param_staged) {
    widen(param_source, param_from, n, p);
    v.param = p - b;
  }
  if (grad_staged) {
    widen(t.grad_dtype, offset(t.grad, t.grad_dtype, b), n, g);
    v.grad = g - b;
  }
  for (int j = 0; j < halves; ++j) {
    float* s = scratch + n * std::size_t(2 + j);
    widen(t.state_dtype, offset(t.state[full_half[j]], t.state_dtype, b), n, s);
    v.state[full_half[j]] = s - b;
  }
  staged_tensor = tensor;
  body(static_cast<float*>(nullptr), static_cast<const TensorView&>(v), b, e, c);
  staged_tensor = kNotStaged;
  // A one-pass step writes every buffer it has (Job::one_pass); a state of the
  // set the options leave unused is stored as it was widened: the same bits
  // (a signaling NaN comes back quiet).
  const bool check = !job.one_pass;
  if (param_staged && (!check || changed(param_source, param_from, n, p))) {
    if (t.master != nullptr) narrow_nearest(DType::f32, p, n, t.master + b);
    if (is_half(t.dtype)) {
      void* to = offset(t.param, t.dtype, b);
      if (job.rounding == Rounding::stochastic)
        narrow_stochastic(t.dtype, p, n, rounding_key(job.seed, std::uint64_t(job.step), tensor), b, to);
      else
        narrow_nearest(t.dtype, p, n, to);
    }
  }
  for (int j = 0; j < halves; ++j) {
    const float* s = scratch + n * std::size_t(2 + j);
    void* to = offset(t.state[full_half[j]], t.state_dtype, b);
    if (!check || changed(t.state_dtype, to, n, s)) narrow_nearest(t.state_dtype, s, n, to);
  }
}

// Call body(type, tensor, begin, end, chunk) for each chunk, where type is a
// null pointer of the element type the kernel computes in: float for f32
// and for bf16/f16 storage (staged_chunk), double for f64.
template <class Body>
inline void for_each_indexed_chunk(const detail::Job& job, std::size_t first, std::size_t last, Body&& body) {
  for (std::size_t c = first; c < last; ++c) {
    const detail::Chunk& ch = job.chunks[c];
    const TensorView& t = job.tensors[ch.tensor];
    if (staged(t))
      staged_chunk(job, t, c, ch.begin, ch.end, body);
    else if (t.dtype == DType::f32)
      body(static_cast<float*>(nullptr), t, ch.begin, ch.end, c);
    else
      body(static_cast<double*>(nullptr), t, ch.begin, ch.end, c);
  }
}

// For a kernel that reads grads outside its chunk (Adafactor's row and column
// sums), where a staged view holds only the chunk's: f(grad_at), grad_at(i)
// being element i of `source`'s grad (the tensor as in job.tensors) as T,
// widened from bf16/f16 storage as staging would.
template <class T, class F>
inline void with_grad_reader(const TensorView& source, F&& f) {
  const auto* h = static_cast<const std::uint16_t*>(source.grad);
  if (source.grad_dtype == DType::bf16) {
    f([h](std::size_t i) { return T(bf16_to_float(h[i])); });
  } else if (source.grad_dtype == DType::f16) {
    f([h](std::size_t i) { return T(f16_to_float(h[i])); });
  } else {
    const T* g = static_cast<const T*>(source.grad);
    f([g](std::size_t i) { return g[i]; });
  }
}

// Call body(type, tensor, begin, end) with typed pointers for each chunk.
template <class Body>
inline void for_each_chunk(const detail::Job& job, std::size_t first, std::size_t last, Body&& body) {
  for_each_indexed_chunk(job, first, last, [&](auto* type, const TensorView& t, std::size_t b, std::size_t e,
                                               std::size_t) { body(type, t, b, e); });
}

// The options tensor t of the job steps with: its param group's in a step over
// groups whose options differ (Job::group_options), else the step's own.
template <class O>
inline const O& group_options_of(const O& o, const detail::Job& job, const TensorView& t) {
  if (job.group_options == nullptr) return o;
  // A staged chunk's view is a copy, outside job.tensors.
  const std::size_t i = staged_tensor != kNotStaged ? staged_tensor : std::size_t(&t - job.tensors);
  return static_cast<const O*>(job.group_options)[job.group_of[i]];
}

// Typed views of a tensor's buffers.
template <class T>
inline T* param_of(const TensorView& t) { return static_cast<T*>(t.param); }
template <class T>
inline const T* grad_of(const TensorView& t) { return static_cast<const T*>(t.grad); }
template <class T>
inline T* state_of(const TensorView& t, int slot) { return static_cast<T*>(t.state[slot]); }

// torch's lerp(start, end, w): start + w*(end-start) when |w| < 0.5, else
// end - (end-start)*(1-w), which keeps the result exact at w = 1. Written as
// base + coeff*(end-start) with base and coeff chosen once per step.
struct Lerp {
  bool from_end;
  double coeff;
};
inline Lerp lerp_weight(double w) {
  const bool small = (w < 0 ? -w : w) < 0.5;
  return {!small, small ? w : w - 1.0};
}
template <class T>
inline T lerp(T start, T end, bool from_end, T coeff) {
  return (from_end ? end : start) + coeff * (end - start);
}

// ---- steps of several passes (kernel_table.hpp's Passes) -------------------

// Before a loop whose iterations touch disjoint elements, where the compiler
// cannot prove it (element updates written as lambdas lose __restrict): it
// then vectorizes the loop. The arithmetic of each element is unchanged.
#if defined(__clang__)
#define GRADSTEP_INDEPENDENT_ITERATIONS _Pragma("clang loop vectorize(assume_safety)")
#elif defined(__GNUC__)
#define GRADSTEP_INDEPENDENT_ITERATIONS _Pragma("GCC ivdep")
#else
#define GRADSTEP_INDEPENDENT_ITERATIONS
#endif

// Run f(first, last) over every chunk of the plan, on the step's threads.
template <class F>
inline void for_all_chunks(const detail::Passes& passes, F&& f) {
  using Fn = std::remove_reference_t<F>;
  passes.run(
      passes, [](void* ctx, std::size_t first, std::size_t last) { (*static_cast<Fn*>(ctx))(first, last); },
      const_cast<void*>(static_cast<const void*>(&f)));
}

// K sums over [begin, end) in one fixed order on every target, as
// grad_stats.inl takes its sum of squares: term(i, x) sets x[0..K) for
// element i (and may write that element's buffers: one loop reads, updates
// and reduces); element i adds to lane (i - begin) % 16 of each sum, and the
// 16 lanes are folded pairwise. out[k] = the k-th sum.
template <int K, class F>
inline void lane_sums(std::size_t begin, std::size_t end, double* out, F&& term) {
  constexpr int kLanes = 16;
  double lanes[K][kLanes] = {};
  std::size_t i = begin;
  for (; i + kLanes <= end; i += kLanes) {
    // The 16 elements of a block are independent (each writes only its own
    // buffers' element i + j): said so, the compiler vectorizes across them.
    // Vectorized or not, each lane adds the same values in the same order.
    GRADSTEP_INDEPENDENT_ITERATIONS
    for (int j = 0; j < kLanes; ++j) {
      double x[K];
      term(i + j, x);
      for (int k = 0; k < K; ++k) lanes[k][j] += x[k];
    }
  }
  for (int j = 0; i < end; ++i, ++j) {
    double x[K];
    term(i, x);
    for (int k = 0; k < K; ++k) lanes[k][j] += x[k];
  }
  for (int k = 0; k < K; ++k) {
    for (int width = kLanes / 2; width >= 1; width /= 2)
      for (int j = 0; j < width; ++j) lanes[k][j] += lanes[k][j + width];
    out[k] = lanes[k][0];
  }
}

// The partial sums of a reducing pass added up in chunk order: total[k] over
// the whole set, and (when per_tensor is not null) per_tensor[t * K + k]
// over tensor t's chunks. Independent of how the chunks were spread over
// threads, so bit-identical for every thread count.
template <int K>
inline void partial_totals(const detail::Job& job, const detail::Passes& passes, double* total,
                           double* per_tensor = nullptr) {
  for (int k = 0; k < K; ++k) total[k] = 0.0;
  if (per_tensor != nullptr)
    for (std::size_t i = 0; i < passes.tensor_count * K; ++i) per_tensor[i] = 0.0;
  for (std::size_t c = 0; c < passes.chunk_count; ++c) {
    const double* part = passes.partials + c * K;
    for (int k = 0; k < K; ++k) {
      total[k] += part[k];
      if (per_tensor != nullptr) per_tensor[job.chunks[c].tensor * K + k] += part[k];
    }
  }
}

// A reducing pass: body(type, tensor, begin, end, out) over every chunk of
// the plan, typed as for_each_chunk, out being the chunk's K partial sums
// (it calls lane_sums<K>); then total[k], the sums over the set in chunk order.
template <int K, class Body>
inline void reducing_pass(const detail::Job& job, const detail::Passes& passes, double* total, Body&& body) {
  for_all_chunks(passes, [&](std::size_t first, std::size_t last) {
    for (std::size_t c = first; c < last; ++c)
      for_each_chunk(job, c, c + 1, [&](auto* type, const TensorView& t, std::size_t b, std::size_t e) {
        body(type, t, b, e, passes.partials + c * K);
      });
  });
  partial_totals<K>(job, passes, total);
}

// Adam's bias correction as Prodigy and D-Adaptation Adam apply it to their
// step (use_bias_correction), at their step count k (0 before the first):
// sqrt(1 - beta2^(k+1)) / (1 - beta1^(k+1)), with Python's ** (pow) as they do.
inline double lr_free_bias_correction(bool on, double beta1, double beta2, double k) {
  if (!on) return 1.0;
  return __builtin_pow(1.0 - __builtin_pow(beta2, k + 1.0), 0.5) / (1.0 - __builtin_pow(beta1, k + 1.0));
}

// Python's max(a, b) and min(a, b), as the references compute their d: the
// first argument unless the second compares greater (smaller), so a NaN
// second argument keeps the first.
inline double py_max(double a, double b) { return b > a ? b : a; }
inline double py_min(double a, double b) { return b < a ? b : a; }

template <class T>
inline T abs_(T x) {
  return x < T(0) ? -x : x;
}

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

// Call body(tensor, begin, end) with typed pointers for each chunk.
template <class Body>
inline void for_each_chunk(const detail::Job& job, std::size_t first, std::size_t last, Body&& body) {
  for (std::size_t c = first; c < last; ++c) {
    const detail::Chunk& ch = job.chunks[c];
    const TensorView& t = job.tensors[ch.tensor];
    if (t.dtype == DType::f32)
      body(static_cast<float*>(nullptr), t, ch.begin, ch.end);
    else
      body(static_cast<double*>(nullptr), t, ch.begin, ch.end);
  }
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

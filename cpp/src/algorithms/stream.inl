// The bandwidth probe behind `gradstep bench`'s roof: the memory traffic of
// an optimizer step with almost none of its arithmetic. It reads grad and
// every buffer it writes (param and the states in the slot mask) and writes
// those back, like a step, so its bytes per element equal the optimizer's:
//   x[i] = x[i] * 0.5 + g[i]     for x in param and each streamed state
// (values stay bounded: x converges to 2 g).

template <class T, int kStates>
void stream_range(const TensorView& t, std::size_t begin, std::size_t end, unsigned slot_mask) {
  T* __restrict p = param_of<T>(t);
  const T* __restrict g = grad_of<T>(t);
  // The streamed states, packed to the front so the loop has no branches.
  T* s[kMaxStates] = {};
  int n = 0;
  for (int slot = 0; slot < kMaxStates; ++slot)
    if (slot_mask & (1u << slot)) s[n++] = state_of<T>(t, slot);
  T* __restrict s0 = s[0];
  T* __restrict s1 = s[1];
  T* __restrict s2 = s[2];
  T* __restrict s3 = s[3];
  const T half = T(0.5);
  for (std::size_t i = begin; i < end; ++i) {
    const T gi = g[i];
    p[i] = p[i] * half + gi;
    if (kStates > 0) s0[i] = s0[i] * half + gi;
    if (kStates > 1) s1[i] = s1[i] * half + gi;
    if (kStates > 2) s2[i] = s2[i] * half + gi;
    if (kStates > 3) s3[i] = s3[i] * half + gi;
  }
}

void stream_chunks(const detail::StreamOptions& o, const detail::Job& job, std::size_t first,
                   std::size_t last) {
  const int states = __builtin_popcount(o.slot_mask & ((1u << kMaxStates) - 1));
  for_each_chunk(job, first, last, [&](auto* type, const TensorView& t, std::size_t b, std::size_t e) {
    using T = std::remove_pointer_t<decltype(type)>;
    switch (states) {
      case 0:
        return stream_range<T, 0>(t, b, e, o.slot_mask);
      case 1:
        return stream_range<T, 1>(t, b, e, o.slot_mask);
      case 2:
        return stream_range<T, 2>(t, b, e, o.slot_mask);
      case 3:
        return stream_range<T, 3>(t, b, e, o.slot_mask);
      default:
        return stream_range<T, 4>(t, b, e, o.slot_mask);
    }
  });
}

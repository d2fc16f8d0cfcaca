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

// One buffer of a tensor stored in bf16/f16 (or with f32 states or a master
// beside a half param or grad), streamed as its own dtype's bits: the same
// bytes a step moves, without the staging a step does (the roof is memory
// traffic). Buffers are passed one after another over the chunk, which stays
// in cache, so the memory traffic is that of one fused pass.
template <class X>
void stream_bits(void* to, const void* grad, DType grad_dtype, std::size_t b, std::size_t e) {
  X* __restrict x = static_cast<X*>(to);
  if (grad_dtype == DType::f32) {
    const std::uint32_t* __restrict g = static_cast<const std::uint32_t*>(grad);
    for (std::size_t i = b; i < e; ++i) x[i] = X((x[i] >> 1) + X(g[i]));
  } else {
    const std::uint16_t* __restrict g = static_cast<const std::uint16_t*>(grad);
    for (std::size_t i = b; i < e; ++i) x[i] = X((x[i] >> 1) + X(g[i]));
  }
}

void stream_staged(const TensorView& t, std::size_t b, std::size_t e, unsigned slot_mask) {
  auto stream = [&](void* to, DType dtype) {
    if (is_half(dtype))
      stream_bits<std::uint16_t>(to, t.grad, t.grad_dtype, b, e);
    else
      stream_bits<std::uint32_t>(to, t.grad, t.grad_dtype, b, e);
  };
  stream(t.param, t.dtype);
  if (t.master != nullptr) stream(t.master, DType::f32);
  for (int slot = 0; slot < kMaxStates; ++slot)
    if ((slot_mask & (1u << slot)) && t.state[slot] != nullptr) stream(t.state[slot], t.state_dtype);
}

template <class T>
void stream_typed(const TensorView& t, std::size_t b, std::size_t e, unsigned slot_mask) {
  switch (__builtin_popcount(slot_mask & ((1u << kMaxStates) - 1))) {
    case 0:
      return stream_range<T, 0>(t, b, e, slot_mask);
    case 1:
      return stream_range<T, 1>(t, b, e, slot_mask);
    case 2:
      return stream_range<T, 2>(t, b, e, slot_mask);
    case 3:
      return stream_range<T, 3>(t, b, e, slot_mask);
    default:
      return stream_range<T, 4>(t, b, e, slot_mask);
  }
}

void stream_chunks(const detail::StreamOptions& o, const detail::Job& job, std::size_t first,
                   std::size_t last) {
  for (std::size_t c = first; c < last; ++c) {
    const detail::Chunk& ch = job.chunks[c];
    const TensorView& t = job.tensors[ch.tensor];
    if (staged(t))
      stream_staged(t, ch.begin, ch.end, o.slot_mask);
    else if (t.dtype == DType::f32)
      stream_typed<float>(t, ch.begin, ch.end, o.slot_mask);
    else
      stream_typed<double>(t, ch.begin, ch.end, o.slot_mask);
  }
}

// Lion: the update equations are Declaration<LionOptions>::equations
// (cpp/include/gradstep/optim.hpp), shown by help(gs.Lion); lion_pytorch.Lion's
// update_fn (lion-pytorch 0.2.5) in its operation order: the decay
// p * (1 - lr * wd), then p + (-lr) * sign(m * beta1 + (1 - beta1) * g), then
// m * beta2 + (1 - beta2) * g, each product and sum rounded in the element
// type with the coefficients rounded to it, as torch rounds a float32
// tensor's scalar operands (torch's AVX2/AVX-512 kernels fuse the
// multiply-adds of the two interpolations, its default kernels do not; this
// is the unfused form, the same on every ISA target).
//
// The param's decay and update are done in double and rounded once, as in
// adam.inl: for float64 params that is torch's arithmetic exactly (lr * sign
// is exact), for float32 params one rounding per step instead of torch's
// two, and no bias from a float32 (1 - lr * wd) applied step after step.

// torch.sign: 1, -1, or 0 for +0, -0 and NaN (a comparison with NaN is false).
template <class T>
inline T sign_of(T x) {
  return x > T(0) ? T(1) : (x < T(0) ? T(-1) : T(0));
}

template <class T, bool kDecay>
void lion_range(const TensorView& t, std::size_t begin, std::size_t end, const LionOptions& o,
                double param_scale, double grad_scale) {
  T* __restrict p = param_of<T>(t);
  const T* __restrict g = grad_of<T>(t);
  T* __restrict m = state_of<T>(t, 0);
  const T scale = T(grad_scale);  // ±1 (maximize) times any clipping factor
  const T beta1 = T(o.beta1), one_minus_beta1 = T(1.0 - o.beta1);
  const T beta2 = T(o.beta2), one_minus_beta2 = T(1.0 - o.beta2);
  const double neg_lr = -o.lr;
  for (std::size_t i = begin; i < end; ++i) {
    const T gi = scale * g[i];
    const T mi = m[i];
    const T u = sign_of(mi * beta1 + one_minus_beta1 * gi);
    const double decayed = kDecay ? double(p[i]) * param_scale : double(p[i]);
    p[i] = T(decayed + neg_lr * double(u));
    m[i] = mi * beta2 + one_minus_beta2 * gi;
  }
}

void chunks(const LionOptions& o, const detail::Job& job, std::size_t first, std::size_t last) {
  // lion_pytorch: wd /= init_lr (decoupled), then p.mul_(1 - lr * wd), in double.
  const double wd = o.decoupled_weight_decay ? o.weight_decay / o.init_lr : o.weight_decay;
  const double param_scale = 1.0 - o.lr * wd;
  for_each_chunk(job, first, last, [&](auto* type, const TensorView& t, std::size_t b, std::size_t e) {
    using T = std::remove_pointer_t<decltype(type)>;
    // p * 1.0 is p (NaN and -0 included): no decay, no multiply.
    with_flag(param_scale != 1.0,
              [&](auto decay) { lion_range<T, decay.value>(t, b, e, o, param_scale, job.grad_scale); });
  });
}

// Adam, AdamW and AMSGrad: the update equations are
// Declaration<AdamOptions>::equations (cpp/include/gradstep/optim.hpp), shown by
// help(gs.Adam); torch.optim.Adam / AdamW's single-tensor path.
//
// AdamW's decay and update are applied to float32 params in double and
// rounded once: rounded separately, p * (1 - lr * wd) rounds in the same
// direction step after step for a param that barely moves, and that bias
// grows linearly, to several times the error of storing p once per step
// (torch's float32 has it too). Plain IEEE double operations, so every ISA
// target gives the same bits; for float64 params it is the same arithmetic.

// One division and one square root per element: the bias correction of v is
// folded into the per-step constants, lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps)
// == (lr * sqrt(bc2) / bc1) * m / (sqrt(v) + eps * sqrt(bc2)), both constants
// computed once per step in double and rounded once to the element type.
// That is one rounding fewer per element than dividing sqrt(v) by sqrt(bc2).

template <class T, bool kL2, bool kAmsgrad, bool kDecoupled>
void adam_range(const TensorView& t, std::size_t begin, std::size_t end, const AdamOptions& o,
                Lerp m_lerp, double param_scale, double neg_step_size, double eps_scaled, double grad_scale) {
  T* __restrict p = param_of<T>(t);
  const T* __restrict g = grad_of<T>(t);
  T* __restrict m = state_of<T>(t, 0);
  T* __restrict v = state_of<T>(t, 1);
  T* __restrict vmax = state_of<T>(t, 2);
  const T scale = T(grad_scale);  // ±1 (maximize) times any clipping factor
  const T wd = T(o.weight_decay);
  const T m_coeff = T(m_lerp.coeff);
  const bool m_from_end = m_lerp.from_end;
  const T beta2 = T(o.beta2), one_minus_beta2 = T(1.0 - o.beta2);
  const T eps = T(eps_scaled), neg_step = T(neg_step_size);
  for (std::size_t i = begin; i < end; ++i) {
    const double decayed = double(p[i]) * param_scale;
    const T pi = kDecoupled ? T(decayed) : p[i];
    T gi = scale * g[i];
    if (kL2) gi = gi + wd * pi;
    const T mi = lerp(m[i], gi, m_from_end, m_coeff);
    m[i] = mi;
    T vi = v[i] * beta2 + one_minus_beta2 * gi * gi;
    v[i] = vi;
    if (kAmsgrad) {
      vi = maximum_nan(vmax[i], vi);
      vmax[i] = vi;
    }
    const T denom = sqrt_(vi) + eps;
    if (kDecoupled)
      p[i] = T(decayed + neg_step_size * double(mi / denom));
    else
      p[i] = pi + neg_step * (mi / denom);
  }
}

void chunks(const AdamOptions& o, const detail::Job& job, std::size_t first, std::size_t last) {
  const double step = double(job.step);
  const double bc1 = 1.0 - __builtin_pow(o.beta1, step);
  const double bc2_sqrt = __builtin_sqrt(1.0 - __builtin_pow(o.beta2, step));
  const double neg_step_size = -(o.lr * bc2_sqrt / bc1);
  const double eps_scaled = o.eps * bc2_sqrt;
  const bool decoupled = o.decoupled_weight_decay && o.weight_decay != 0.0;
  const double param_scale = decoupled ? 1.0 - o.lr * o.weight_decay : 1.0;
  const Lerp m_lerp = lerp_weight(1.0 - o.beta1);
  const bool l2 = !o.decoupled_weight_decay && o.weight_decay != 0.0;
  for_each_chunk(job, first, last, [&](auto* type, const TensorView& t, std::size_t b, std::size_t e) {
    using T = std::remove_pointer_t<decltype(type)>;
    with_flag(l2, [&](auto l2f) {
      with_flag(o.amsgrad, [&](auto ams) {
        with_flag(decoupled, [&](auto dec) {
          adam_range<T, l2f.value, ams.value, dec.value>(t, b, e, o, m_lerp, param_scale, neg_step_size,
                                                         eps_scaled, job.grad_scale);
        });
      });
    });
  });
}

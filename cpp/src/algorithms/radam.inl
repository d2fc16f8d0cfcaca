// RAdam: the update equations are Declaration<RadamOptions>::equations
// (cpp/include/gradstep/optim.hpp), shown by help(gs.RAdam); torch.optim.RAdam's
// single-tensor path. rho and the rectification switch at rho > 5 are
// computed per step in double from the step count, with torch's expressions.
//
// One division and one square root per element (none without rectification):
// lr / bc1 * m * rect * sqrt(bc2) / (sqrt(v) + eps) == c * (m / (sqrt(v) + eps))
// with c = lr * rect * sqrt(bc2) / bc1 computed once per step in double and
// rounded once to the element type. As in adam.inl, the decoupled decay and
// the update of a float32 param are done in double and rounded once.

template <class T, bool kL2, bool kDecoupled, bool kRect>
void radam_range(const TensorView& t, std::size_t begin, std::size_t end, const RadamOptions& o,
                 Lerp m_lerp, double param_scale, double neg_step_size, double grad_scale) {
  T* __restrict p = param_of<T>(t);
  const T* __restrict g = grad_of<T>(t);
  T* __restrict m = state_of<T>(t, 0);
  T* __restrict v = state_of<T>(t, 1);
  const T scale = T(grad_scale);  // ±1 (maximize) times any clipping factor
  const T wd = T(o.weight_decay);
  const T m_coeff = T(m_lerp.coeff);
  const bool m_from_end = m_lerp.from_end;
  const T beta2 = T(o.beta2), one_minus_beta2 = T(1.0 - o.beta2);
  const T eps = T(o.eps), neg_step = T(neg_step_size);
  for (std::size_t i = begin; i < end; ++i) {
    const double decayed = double(p[i]) * param_scale;
    const T pi = kDecoupled ? T(decayed) : p[i];
    T gi = scale * g[i];
    if (kL2) gi = gi + wd * pi;
    const T mi = lerp(m[i], gi, m_from_end, m_coeff);
    m[i] = mi;
    const T vi = v[i] * beta2 + one_minus_beta2 * gi * gi;
    v[i] = vi;
    const T u = kRect ? mi / (sqrt_(vi) + eps) : mi;
    if (kDecoupled)
      p[i] = T(decayed + neg_step_size * double(u));
    else
      p[i] = pi + neg_step * u;
  }
}

void chunks(const RadamOptions& o, const detail::Job& job, std::size_t first, std::size_t last) {
  const double step = double(job.step);
  const double beta2_t = __builtin_pow(o.beta2, step);
  const double bc1 = 1.0 - __builtin_pow(o.beta1, step);
  const double bc2 = 1.0 - beta2_t;
  const double rho_inf = 2.0 / (1.0 - o.beta2) - 1.0;
  const double rho_t = rho_inf - 2.0 * step * beta2_t / bc2;
  const bool rect = rho_t > 5.0;
  double neg_step_size = -(o.lr / bc1);
  if (rect) {
    const double r = __builtin_pow((rho_t - 4.0) * (rho_t - 2.0) * rho_inf /
                                       ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t), 0.5);
    neg_step_size = -(o.lr * __builtin_pow(bc2, 0.5) * r / bc1);
  }
  const bool decoupled = o.decoupled_weight_decay && o.weight_decay != 0.0;
  const double param_scale = decoupled ? 1.0 - o.lr * o.weight_decay : 1.0;
  const Lerp m_lerp = lerp_weight(1.0 - o.beta1);
  const bool l2 = !o.decoupled_weight_decay && o.weight_decay != 0.0;
  for_each_chunk(job, first, last, [&](auto* type, const TensorView& t, std::size_t b, std::size_t e) {
    using T = std::remove_pointer_t<decltype(type)>;
    with_flag(l2, [&](auto l2f) {
      with_flag(decoupled, [&](auto dec) {
        with_flag(rect, [&](auto rf) {
          radam_range<T, l2f.value, dec.value, rf.value>(t, b, e, o, m_lerp, param_scale, neg_step_size,
                                                         job.grad_scale);
        });
      });
    });
  });
}

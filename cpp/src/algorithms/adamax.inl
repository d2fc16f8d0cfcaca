// Adamax: the update equations are Declaration<AdamaxOptions>::equations
// (cpp/include/gradstep/optim.hpp), shown by help(gs.Adamax); torch.optim.Adamax's
// single-tensor path, in its operation order: u = maximum(u * beta2, |g| + eps)
// (NaN propagates, as torch.maximum), then p + (-lr / bc1) * (m / u). One
// division per element; lr / (1 - beta1^step) is computed once per step in
// double and rounded once to the element type.

template <class T, bool kL2>
void adamax_range(const TensorView& t, std::size_t begin, std::size_t end, const AdamaxOptions& o,
                  Lerp m_lerp, double neg_clr, double grad_scale) {
  T* __restrict p = param_of<T>(t);
  const T* __restrict g = grad_of<T>(t);
  T* __restrict m = state_of<T>(t, 0);
  T* __restrict u = state_of<T>(t, 1);
  const T scale = T(grad_scale);  // ±1 (maximize) times any clipping factor
  const T wd = T(o.weight_decay), beta2 = T(o.beta2), eps = T(o.eps), neg_step = T(neg_clr);
  const T m_coeff = T(m_lerp.coeff);
  const bool m_from_end = m_lerp.from_end;
  for (std::size_t i = begin; i < end; ++i) {
    T gi = scale * g[i];
    if (kL2) gi = gi + wd * p[i];
    const T mi = lerp(m[i], gi, m_from_end, m_coeff);
    m[i] = mi;
    const T gabs = gi < T(0) ? -gi : gi;
    const T ui = maximum_nan(u[i] * beta2, gabs + eps);
    u[i] = ui;
    p[i] = p[i] + neg_step * (mi / ui);
  }
}

void chunks(const AdamaxOptions& o, const detail::Job& job, std::size_t first, std::size_t last) {
  const double bc1 = 1.0 - __builtin_pow(o.beta1, double(job.step));
  const double neg_clr = -(o.lr / bc1);
  const Lerp m_lerp = lerp_weight(1.0 - o.beta1);
  for_each_chunk(job, first, last, [&](auto* type, const TensorView& t, std::size_t b, std::size_t e) {
    using T = std::remove_pointer_t<decltype(type)>;
    with_flag(o.weight_decay != 0.0,
              [&](auto l2) { adamax_range<T, l2.value>(t, b, e, o, m_lerp, neg_clr, job.grad_scale); });
  });
}

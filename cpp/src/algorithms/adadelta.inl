// Adadelta: the update equations are Declaration<AdadeltaOptions>::equations
// (cpp/include/gradstep/optim.hpp), shown by help(gs.Adadelta); lr scales the
// delta, as in torch.

template <class T, bool kL2>
void adadelta_range(const TensorView& t, std::size_t begin, std::size_t end, const AdadeltaOptions& o, double grad_scale) {
  T* __restrict p = param_of<T>(t);
  const T* __restrict g = grad_of<T>(t);
  T* __restrict sq = state_of<T>(t, 0);
  T* __restrict acc = state_of<T>(t, 1);
  const T scale = T(grad_scale);  // ±1 (maximize) times any clipping factor
  const T wd = T(o.weight_decay), rho = T(o.rho), one_minus_rho = T(1.0 - o.rho);
  const T eps = T(o.eps), neg_lr = T(-o.lr);
  for (std::size_t i = begin; i < end; ++i) {
    T gi = scale * g[i];
    if (kL2) gi = gi + wd * p[i];
    const T s = sq[i] * rho + one_minus_rho * gi * gi;
    sq[i] = s;
    const T delta = sqrt_(acc[i] + eps) / sqrt_(s + eps) * gi;
    acc[i] = acc[i] * rho + one_minus_rho * delta * delta;
    p[i] = p[i] + neg_lr * delta;
  }
}

void chunks(const AdadeltaOptions& o, const detail::Job& job, std::size_t first,
                     std::size_t last) {
  for_each_chunk(job, first, last, [&](auto* type, const TensorView& t, std::size_t b, std::size_t e) {
    using T = std::remove_pointer_t<decltype(type)>;
    with_flag(o.weight_decay != 0.0, [&](auto l2) { adadelta_range<T, l2.value>(t, b, e, o, job.grad_scale); });
  });
}

// Adagrad: the update equations are Declaration<AdagradOptions>::equations
// (cpp/include/gradstep/optim.hpp), shown by help(gs.Adagrad); torch.optim.Adagrad's
// dense path.

template <class T, bool kL2>
void adagrad_range(const TensorView& t, std::size_t begin, std::size_t end, const AdagradOptions& o,
                   double clr, double grad_scale) {
  T* __restrict p = param_of<T>(t);
  const T* __restrict g = grad_of<T>(t);
  T* __restrict sum = state_of<T>(t, 0);
  const T scale = T(grad_scale);  // ±1 (maximize) times any clipping factor
  const T wd = T(o.weight_decay), eps = T(o.eps), neg_clr = T(-clr);
  for (std::size_t i = begin; i < end; ++i) {
    T gi = scale * g[i];
    if (kL2) gi = gi + wd * p[i];
    const T s = sum[i] + gi * gi;
    sum[i] = s;
    p[i] = p[i] + neg_clr * (gi / (sqrt_(s) + eps));
  }
}

void chunks(const AdagradOptions& o, const detail::Job& job, std::size_t first,
                    std::size_t last) {
  const double clr = o.lr / (1.0 + double(job.step - 1) * o.lr_decay);
  for_each_chunk(job, first, last, [&](auto* type, const TensorView& t, std::size_t b, std::size_t e) {
    using T = std::remove_pointer_t<decltype(type)>;
    with_flag(o.weight_decay != 0.0,
              [&](auto l2) { adagrad_range<T, l2.value>(t, b, e, o, clr, job.grad_scale); });
  });
}

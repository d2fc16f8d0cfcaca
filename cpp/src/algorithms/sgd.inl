// SGD: the update equations are Declaration<SgdOptions>::equations
// (cpp/include/gradstep/optim.hpp), shown by help(gs.SGD); torch.optim.SGD's
// single-tensor path.

template <class T, bool kL2, bool kMomentum, bool kFirst, bool kNesterov>
void sgd_range(const TensorView& t, std::size_t begin, std::size_t end, const SgdOptions& o, double grad_scale) {
  T* __restrict p = param_of<T>(t);
  const T* __restrict g = grad_of<T>(t);
  T* __restrict buf = state_of<T>(t, 0);
  const T scale = T(grad_scale);  // ±1 (maximize) times any clipping factor
  const T wd = T(o.weight_decay), mom = T(o.momentum), keep = T(1.0 - o.dampening);
  const T neg_lr = T(-o.lr);
  for (std::size_t i = begin; i < end; ++i) {
    T gi = scale * g[i];
    if (kL2) gi = gi + wd * p[i];
    T d = gi;
    if (kMomentum) {
      const T b = kFirst ? gi : buf[i] * mom + keep * gi;
      buf[i] = b;
      d = kNesterov ? gi + mom * b : b;
    }
    p[i] = p[i] + neg_lr * d;
  }
}

void chunks(const SgdOptions& o, const detail::Job& job, std::size_t first, std::size_t last) {
  const bool momentum = o.momentum != 0.0;
  for_each_chunk(job, first, last, [&](auto* type, const TensorView& t, std::size_t b, std::size_t e) {
    using T = std::remove_pointer_t<decltype(type)>;
    with_flag(o.weight_decay != 0.0, [&](auto l2) {
      with_flag(momentum, [&](auto mom) {
        with_flag(momentum && job.step == 1, [&](auto firstp) {
          with_flag(momentum && o.nesterov, [&](auto nest) {
            sgd_range<T, l2.value, mom.value, firstp.value, nest.value>(t, b, e, o, job.grad_scale);
          });
        });
      });
    });
  });
}

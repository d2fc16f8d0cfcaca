// SignSGD: Declaration<SignSgdOptions>::equations (cpp/include/gradstep/optim.hpp).

template <class T>
void signsgd_range(const TensorView& t, std::size_t begin, std::size_t end, const SignSgdOptions& o,
                   double grad_scale) {
  T* __restrict p = param_of<T>(t);
  const T* __restrict g = grad_of<T>(t);
  const T scale = T(grad_scale), neg_lr = T(-o.lr);
  for (std::size_t i = begin; i < end; ++i) {
    const T gi = scale * g[i];
    const T sign = gi > T(0) ? T(1) : (gi < T(0) ? T(-1) : T(0));
    p[i] = p[i] + neg_lr * sign;
  }
}

void chunks(const SignSgdOptions& o, const detail::Job& job, std::size_t first, std::size_t last) {
  for_each_chunk(job, first, last, [&](auto* type, const TensorView& t, std::size_t b, std::size_t e) {
    using T = std::remove_pointer_t<decltype(type)>;
    signsgd_range<T>(t, b, e, o, job.grad_scale);
  });
}

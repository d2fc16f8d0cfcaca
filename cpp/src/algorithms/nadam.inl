// NAdam: the update equations are Declaration<NadamOptions>::equations
// (cpp/include/gradstep/optim.hpp), shown by help(gs.NAdam); torch.optim.NAdam's
// single-tensor path.
//
// torch keeps mu_product = mu_1 * ... * mu_step as a float32 scalar state
// (its default scalar dtype) and updates it with mu_product *= mu, i.e. in
// float32 with mu rounded to float32: nadam_mu_product() repeats exactly that
// recurrence from the step count, so gs.NAdam agrees with torch.optim.NAdam
// without a scalar state of its own. A caller holding torch's value
// (gradstep.torch, from state["mu_product"]) passes it in the options and it
// is used as given. mu, mu_next and the step's constants are in double.
//
// One division and one square root per element: torch's
//   p += c_g * g / (sqrt(v / bc2) + eps),  p += c_m * m / (sqrt(v / bc2) + eps)
// is p += (c_g' * g + c_m' * m) / (sqrt(v) + eps * sqrt(bc2)) with
// c' = c * sqrt(bc2), all computed once per step in double and rounded once
// to the element type. As in adam.inl, the decoupled decay and the update of
// a float32 param are done in double and rounded once.

inline double nadam_mu(double beta1, double psi, double step) {
  return beta1 * (1.0 - 0.5 * __builtin_pow(0.96, step * psi));
}

// torch's float32 mu_product after `step` steps. The product only shrinks
// and is 0 for good once it underflows; each thread remembers where it got
// to, so consecutive steps cost one multiplication (a jump, e.g. a resumed
// run, recomputes from step 1).
inline double nadam_mu_product(double beta1, double psi, std::int64_t step) {
  struct Memo {
    double beta1 = -1.0, psi = -1.0;
    std::int64_t step = 0;
    float product = 1.0f;
  };
  static thread_local Memo memo;
  if (memo.beta1 != beta1 || memo.psi != psi || memo.step > step) memo = Memo{beta1, psi, 0, 1.0f};
  while (memo.step < step && memo.product != 0.0f) {
    ++memo.step;
    memo.product = memo.product * float(nadam_mu(beta1, psi, double(memo.step)));
  }
  if (memo.product == 0.0f) memo.step = step;
  return double(memo.product);
}

template <class T, bool kL2, bool kDecoupled>
void nadam_range(const TensorView& t, std::size_t begin, std::size_t end, const NadamOptions& o,
                 Lerp m_lerp, double param_scale, double c_grad, double c_avg, double eps_scaled,
                 double grad_scale) {
  T* __restrict p = param_of<T>(t);
  const T* __restrict g = grad_of<T>(t);
  T* __restrict m = state_of<T>(t, 0);
  T* __restrict v = state_of<T>(t, 1);
  const T scale = T(grad_scale);  // ±1 (maximize) times any clipping factor
  const T wd = T(o.weight_decay);
  const T m_coeff = T(m_lerp.coeff);
  const bool m_from_end = m_lerp.from_end;
  const T beta2 = T(o.beta2), one_minus_beta2 = T(1.0 - o.beta2);
  const T eps = T(eps_scaled), cg = T(c_grad), cm = T(c_avg);
  for (std::size_t i = begin; i < end; ++i) {
    const double decayed = double(p[i]) * param_scale;
    const T pi = kDecoupled ? T(decayed) : p[i];
    T gi = scale * g[i];
    if (kL2) gi = gi + wd * pi;
    const T mi = lerp(m[i], gi, m_from_end, m_coeff);
    m[i] = mi;
    const T vi = v[i] * beta2 + one_minus_beta2 * gi * gi;
    v[i] = vi;
    const T denom = sqrt_(vi) + eps;
    if (kDecoupled)
      p[i] = T(decayed + (c_grad * double(gi) + c_avg * double(mi)) / double(denom));
    else
      p[i] = pi + (cg * gi + cm * mi) / denom;
  }
}

void chunks(const NadamOptions& o, const detail::Job& job, std::size_t first, std::size_t last) {
  const double step = double(job.step);
  const double bc2_sqrt = __builtin_sqrt(1.0 - __builtin_pow(o.beta2, step));
  const double mu = nadam_mu(o.beta1, o.momentum_decay, step);
  const double mu_next = nadam_mu(o.beta1, o.momentum_decay, step + 1.0);
  const double mu_product =
      o.mu_product != 0.0 ? o.mu_product : nadam_mu_product(o.beta1, o.momentum_decay, job.step);
  const double mu_product_next = mu_product * mu_next;
  const double c_grad = -o.lr * (1.0 - mu) / (1.0 - mu_product) * bc2_sqrt;
  const double c_avg = (-o.lr * mu_next) / (1.0 - mu_product_next) * bc2_sqrt;
  const double eps_scaled = o.eps * bc2_sqrt;
  const bool decoupled = o.decoupled_weight_decay && o.weight_decay != 0.0;
  const double param_scale = decoupled ? 1.0 - o.lr * o.weight_decay : 1.0;
  const Lerp m_lerp = lerp_weight(1.0 - o.beta1);
  const bool l2 = !o.decoupled_weight_decay && o.weight_decay != 0.0;
  for_each_chunk(job, first, last, [&](auto* type, const TensorView& t, std::size_t b, std::size_t e) {
    using T = std::remove_pointer_t<decltype(type)>;
    with_flag(l2, [&](auto l2f) {
      with_flag(decoupled, [&](auto dec) {
        nadam_range<T, l2f.value, dec.value>(t, b, e, o, m_lerp, param_scale, c_grad, c_avg, eps_scaled,
                                             job.grad_scale);
      });
    });
  });
}

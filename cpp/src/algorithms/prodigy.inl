// Prodigy: the update equations are Declaration<ProdigyOptions>::equations
// (cpp/include/gradstep/optim.hpp), shown by help(gs.Prodigy);
// prodigyopt.Prodigy 1.1.2's step, in its order of operations: its element
// updates in the element type, as torch's in-place ops round them, and its
// scalars (d, the sums) in double, as its Python floats.
//
// Two passes over the elements: the first updates the averages and s and
// reduces <g, p0 - p> and ||s||_1 over every tensor (lane_sums, added up in
// chunk order: the same bits on every ISA target and thread count); then d
// is updated from the sums; the second pass moves the params with the new d.
// A step over param groups whose options differ (TensorSet::step_groups)
// takes weight_decay, eps, safeguard_warmup and lr from each tensor's group,
// as prodigyopt reads them per group (a group at lr 0 is left out of the
// sums and its averages, and still moved); the rest from the step's options.

struct ProdigyStep {
  double scale, weight_decay, beta1, beta2, beta3;
  double m_coeff, v_coeff, s_coeff;     // first pass: d * (1 - beta1), d^2 * (1 - beta2), s's weight
  double param_scale, neg_dlr, eps_d;   // second pass: -weight_decay * dlr, -dlr (times d without m), d * eps
};

template <class T, bool kL2>
inline T prodigy_grad(const T* g, const T* p, std::size_t i, T scale, T wd) {
  const T gi = scale * g[i];
  return kL2 ? gi + wd * p[i] : gi;
}

// s and p0 hold element i * slice_p of the param at i (slice_p > 1: p.flatten()[::slice_p]);
// a chunk [begin, end) of the param sums over the sliced elements it holds, in lane_sums order
// over their slice indices: fixed by the chunk, so the same bits for every thread count.
template <class T, bool kL2, bool kMomentum>
void prodigy_accumulate(const TensorView& t, std::size_t begin, std::size_t end, const ProdigyStep& c,
                        std::size_t slice, double* out) {
  T* __restrict p = param_of<T>(t);
  const T* __restrict g = grad_of<T>(t);
  T* __restrict s = state_of<T>(t, 0);
  const T* __restrict p0 = state_of<T>(t, 1);
  T* __restrict v = state_of<T>(t, 2);
  T* __restrict m = state_of<T>(t, 3);
  const T scale = T(c.scale), wd = T(c.weight_decay), beta1 = T(c.beta1), beta2 = T(c.beta2), beta3 = T(c.beta3);
  const T m_coeff = T(c.m_coeff), v_coeff = T(c.v_coeff), s_coeff = T(c.s_coeff);
  if (slice > 1) {
    GRADSTEP_INDEPENDENT_ITERATIONS
    for (std::size_t i = begin; i < end; ++i) {
      const T gi = prodigy_grad<T, kL2>(g, p, i, scale, wd);
      if (kMomentum) m[i] = m[i] * beta1 + m_coeff * gi;
      v[i] = v[i] * beta2 + v_coeff * gi * gi;
    }
    lane_sums<2>((begin + slice - 1) / slice, (end + slice - 1) / slice, out, [&](std::size_t j, double* x) {
      const std::size_t i = j * slice;
      const T gi = prodigy_grad<T, kL2>(g, p, i, scale, wd);
      x[0] = double(gi) * double(p0[j] - p[i]);
      const T sj = s[j] * beta3 + s_coeff * gi;
      s[j] = sj;
      x[1] = double(abs_(sj));
    });
    return;
  }
  lane_sums<2>(begin, end, out, [&](std::size_t i, double* x) {
    const T gi = prodigy_grad<T, kL2>(g, p, i, scale, wd);
    x[0] = double(gi) * double(p0[i] - p[i]);
    if (kMomentum) m[i] = m[i] * beta1 + m_coeff * gi;
    v[i] = v[i] * beta2 + v_coeff * gi * gi;
    const T si = s[i] * beta3 + s_coeff * gi;
    s[i] = si;
    x[1] = double(abs_(si));
  });
}

template <class T, bool kL2, bool kMomentum, bool kDecoupled>
void prodigy_update(const TensorView& t, std::size_t begin, std::size_t end, const ProdigyStep& c) {
  T* __restrict p = param_of<T>(t);
  const T* __restrict g = grad_of<T>(t);
  const T* __restrict v = state_of<T>(t, 2);
  const T* __restrict m = state_of<T>(t, 3);
  const T scale = T(c.scale), wd = T(c.weight_decay), param_scale = T(c.param_scale);
  const T neg_dlr = T(c.neg_dlr), eps_d = T(c.eps_d);
  for (std::size_t i = begin; i < end; ++i) {
    const T denom = sqrt_(v[i]) + eps_d;
    const T u = kMomentum ? m[i] : prodigy_grad<T, kL2>(g, p, i, scale, wd);
    const T pi = kDecoupled ? p[i] + param_scale * p[i] : p[i];
    p[i] = pi + neg_dlr * u / denom;
  }
}

void step(const ProdigyOptions& o, const detail::Job& job, const detail::Passes& passes, StepReport& report) {
  if (o.lr == 0.0) return;  // the reference skips every tensor, then returns: nothing changes
  const double k = o.k, d = o.d;
  const double dlr = d * o.lr * lr_free_bias_correction(o.use_bias_correction, o.beta1, o.beta2, k);
  const double beta3 = o.beta3 != o.beta3 ? __builtin_sqrt(o.beta2) : o.beta3;  // NaN: unset
  const bool momentum = o.beta1 > 0.0;
  ProdigyStep c{};
  c.scale = job.grad_scale;
  c.weight_decay = o.weight_decay;
  c.beta1 = o.beta1;
  c.beta2 = o.beta2;
  c.beta3 = beta3;
  c.m_coeff = d * (1.0 - o.beta1);
  c.v_coeff = d * d * (1.0 - o.beta2);
  c.s_coeff = o.safeguard_warmup ? (d / o.d0) * d : (d / o.d0) * dlr;
  const std::size_t slice = std::size_t(o.slice_p);  // a whole number >= 1 (validated)
  double sums[2];
  reducing_pass<2>(job, passes, sums, [&](auto* type, const TensorView& t, std::size_t b, std::size_t e, double* out) {
    using T = std::remove_pointer_t<decltype(type)>;
    const ProdigyOptions& g = group_options_of(o, job, t);
    ProdigyStep cg = c;
    if (&g != &o) {
      if (g.lr == 0.0) {  // prodigyopt skips the group's sums and averages
        out[0] = out[1] = 0.0;
        return;
      }
      cg.weight_decay = g.weight_decay;
      cg.s_coeff = g.safeguard_warmup ? (d / o.d0) * d : (d / o.d0) * dlr;
    }
    const bool l2g = g.weight_decay != 0.0 && !o.decouple;
    with_flag(l2g, [&](auto l2f) {
      with_flag(momentum, [&](auto mf) { prodigy_accumulate<T, l2f.value, mf.value>(t, b, e, cg, slice, out); });
    });
  });
  const double d_denom = sums[1];
  if (d_denom == 0.0) return;  // no progress to estimate d from: the reference returns, d and k as they were

  const double d_numerator = o.d_numerator * beta3 + (d / o.d0) * dlr * sums[0];
  const double d_hat = o.d_coef * d_numerator / d_denom;
  double d_new = d;
  if (d_new == o.d0) d_new = py_max(d_new, d_hat);
  const double d_max = py_max(o.d_max, d_hat);
  d_new = py_min(d_max, d_new * o.growth_rate);

  c.param_scale = -o.weight_decay * dlr;
  c.neg_dlr = momentum ? -dlr : -dlr * d_new;
  c.eps_d = d_new * o.eps;
  for_all_chunks(passes, [&](std::size_t first, std::size_t last) {
    for_each_chunk(job, first, last, [&](auto* type, const TensorView& t, std::size_t b, std::size_t e) {
      using T = std::remove_pointer_t<decltype(type)>;
      const ProdigyOptions& g = group_options_of(o, job, t);
      ProdigyStep cg = c;
      if (&g != &o) {
        cg.weight_decay = g.weight_decay;
        cg.param_scale = -g.weight_decay * dlr;
        cg.eps_d = d_new * g.eps;
      }
      const bool l2g = g.weight_decay != 0.0 && !o.decouple, decoupled = g.weight_decay != 0.0 && o.decouple;
      with_flag(l2g, [&](auto l2f) {
        with_flag(momentum, [&](auto mf) {
          with_flag(decoupled, [&](auto df) { prodigy_update<T, l2f.value, mf.value, df.value>(t, b, e, cg); });
        });
      });
    });
  });
  // Declaration order: d, d_max, d_numerator, k.
  report.carried[0] = d_new;
  report.carried[1] = d_max;
  report.carried[2] = d_numerator;
  report.carried[3] = k + 1.0;
}

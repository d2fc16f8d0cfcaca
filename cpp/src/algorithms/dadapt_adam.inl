// D-Adaptation Adam: the update equations are
// Declaration<DadaptAdamOptions>::equations (cpp/include/gradstep/optim.hpp),
// shown by help(gs.DAdaptAdam); dadaptation.DAdaptAdam 3.2's step in its
// order of operations (element updates in the element type, as torch's
// in-place ops; scalars in double, as its Python floats). Two passes, as
// prodigy.inl: averages, s and the two sums (fixed order), then d, then the
// params. A step over param groups whose options differ
// (TensorSet::step_groups) takes weight_decay, eps and lr from each tensor's
// group, as dadaptation reads them per group (a group at lr 0 is left out of
// the sums and its averages, and still moved); the rest from the step's options.

struct DadaptAdamStep {
  double scale, weight_decay, eps, beta1, beta2, sqrt_beta2;
  double m_coeff, s_coeff;  // first pass: dlr * (1 - beta1), dlr * (1 - sqrt(beta2))
  double param_scale;       // second pass: -weight_decay * dlr
};

template <class T, bool kL2>
void dadapt_adam_accumulate(const TensorView& t, std::size_t begin, std::size_t end, const DadaptAdamStep& c,
                            double* out) {
  const T* __restrict p = param_of<T>(t);
  const T* __restrict g = grad_of<T>(t);
  T* __restrict s = state_of<T>(t, 0);
  T* __restrict m = state_of<T>(t, 1);
  T* __restrict v = state_of<T>(t, 2);
  const T scale = T(c.scale), wd = T(c.weight_decay), eps = T(c.eps);
  const T beta1 = T(c.beta1), beta2 = T(c.beta2), one_minus_beta2 = T(1.0 - c.beta2), sqrt_beta2 = T(c.sqrt_beta2);
  const T m_coeff = T(c.m_coeff), s_coeff = T(c.s_coeff);
  lane_sums<2>(begin, end, out, [&](std::size_t i, double* x) {
    T gi = scale * g[i];
    if (kL2) gi = gi + wd * p[i];
    x[0] = double(gi) * double(s[i] / (sqrt_(v[i]) + eps));  // the s and v before this step's update
    m[i] = m[i] * beta1 + m_coeff * gi;
    v[i] = v[i] * beta2 + one_minus_beta2 * gi * gi;
    const T si = s[i] * sqrt_beta2 + s_coeff * gi;
    s[i] = si;
    x[1] = double(abs_(si));
  });
}

template <class T, bool kDecoupled>
void dadapt_adam_update(const TensorView& t, std::size_t begin, std::size_t end, const DadaptAdamStep& c) {
  T* __restrict p = param_of<T>(t);
  const T* __restrict m = state_of<T>(t, 1);
  const T* __restrict v = state_of<T>(t, 2);
  const T eps = T(c.eps), param_scale = T(c.param_scale);
  for (std::size_t i = begin; i < end; ++i) {
    const T pi = kDecoupled ? p[i] + param_scale * p[i] : p[i];
    p[i] = pi + -m[i] / (sqrt_(v[i]) + eps);
  }
}

void step(const DadaptAdamOptions& o, const detail::Job& job, const detail::Passes& passes, StepReport& report) {
  if (o.lr == 0.0) return;  // the reference skips every tensor, then returns: nothing changes
  const double k = o.k, d = o.d;
  const double dlr = d * o.lr * lr_free_bias_correction(o.use_bias_correction, o.beta1, o.beta2, k);
  const double sqrt_beta2 = __builtin_pow(o.beta2, 0.5);  // Python's beta2**0.5
  DadaptAdamStep c{};
  c.scale = job.grad_scale;
  c.weight_decay = o.weight_decay;
  c.eps = o.eps;
  c.beta1 = o.beta1;
  c.beta2 = o.beta2;
  c.sqrt_beta2 = sqrt_beta2;
  c.m_coeff = dlr * (1.0 - o.beta1);
  c.s_coeff = dlr * (1.0 - sqrt_beta2);
  double sums[2];
  reducing_pass<2>(job, passes, sums, [&](auto* type, const TensorView& t, std::size_t b, std::size_t e, double* out) {
    using T = std::remove_pointer_t<decltype(type)>;
    const DadaptAdamOptions& g = group_options_of(o, job, t);
    DadaptAdamStep cg = c;
    if (&g != &o) {
      if (g.lr == 0.0) {  // dadaptation skips the group's sums and averages
        out[0] = out[1] = 0.0;
        return;
      }
      cg.weight_decay = g.weight_decay;
      cg.eps = g.eps;
    }
    const bool l2g = g.weight_decay != 0.0 && !o.decouple;
    with_flag(l2g, [&](auto l2f) { dadapt_adam_accumulate<T, l2f.value>(t, b, e, cg, out); });
  });
  const double numerator_weighted = sqrt_beta2 * o.numerator_weighted + (1.0 - sqrt_beta2) * (dlr * sums[0]);
  const double sk_l1 = sums[1];
  if (sk_l1 == 0.0) return;  // the reference returns here: d, numerator_weighted and k as they were

  const double d_hat = numerator_weighted / ((1.0 - sqrt_beta2) * sk_l1);
  const double d_new = py_max(d, py_min(d_hat, d * o.growth_rate));
  c.param_scale = -o.weight_decay * dlr;
  for_all_chunks(passes, [&](std::size_t first, std::size_t last) {
    for_each_chunk(job, first, last, [&](auto* type, const TensorView& t, std::size_t b, std::size_t e) {
      using T = std::remove_pointer_t<decltype(type)>;
      const DadaptAdamOptions& g = group_options_of(o, job, t);
      DadaptAdamStep cg = c;
      if (&g != &o) {
        cg.eps = g.eps;
        cg.param_scale = -g.weight_decay * dlr;
      }
      const bool decoupled = g.weight_decay != 0.0 && o.decouple;
      with_flag(decoupled, [&](auto df) { dadapt_adam_update<T, df.value>(t, b, e, cg); });
    });
  });
  // Declaration order: d, numerator_weighted, k.
  report.carried[0] = d_new;
  report.carried[1] = numerator_weighted;
  report.carried[2] = k + 1.0;
}

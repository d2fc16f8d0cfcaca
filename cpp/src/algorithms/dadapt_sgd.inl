// D-Adaptation SGD: the update equations are
// Declaration<DadaptSgdOptions>::equations (cpp/include/gradstep/optim.hpp),
// shown by help(gs.DAdaptSGD); dadaptation.DAdaptSGD 3.2's step in its order
// of operations (element updates in the element type, scalars in double).
// The first step measures the gradient's norm first (a pass of its own);
// then every step updates s with the two sums (fixed order), then d, then the
// params from x0 - s (the reference's z, not stored: it is derived). In a
// step over param groups (TensorSet::step_groups) only lr is the group's, as
// dadaptation reads it: a group at lr 0 is left out of the sums and s, and
// still moved; every other option is the step's (its param_groups[0]).

template <class T>
void dadapt_sgd_grad_norm(const TensorView& t, std::size_t begin, std::size_t end, double scale, double* out) {
  const T* __restrict g = grad_of<T>(t);
  const T sc = T(scale);
  lane_sums<2>(begin, end, out, [&](std::size_t i, double* x) {
    const T gi = sc * g[i];
    x[0] = double(gi * gi);  // torch: (grad * grad).sum()
    x[1] = 0.0;
  });
}

template <class T, bool kDecay>
void dadapt_sgd_accumulate(const TensorView& t, std::size_t begin, std::size_t end, double scale,
                           double weight_decay, double dlr, double* out) {
  const T* __restrict p = param_of<T>(t);
  const T* __restrict g = grad_of<T>(t);
  T* __restrict s = state_of<T>(t, 0);
  const T sc = T(scale), wd = T(weight_decay), step = T(dlr);
  lane_sums<2>(begin, end, out, [&](std::size_t i, double* x) {
    T gi = sc * g[i];
    if (kDecay) gi = gi + wd * p[i];
    x[0] = double(gi) * double(s[i]);  // the s before this step's update
    const T si = s[i] + step * gi;
    s[i] = si;
    x[1] = double(si) * double(si);
  });
}

template <class T>
void dadapt_sgd_update(const TensorView& t, std::size_t begin, std::size_t end, double ck) {
  T* __restrict p = param_of<T>(t);
  const T* __restrict s = state_of<T>(t, 0);
  const T* __restrict x0 = state_of<T>(t, 1);
  const T keep = T(1.0 - ck), weight = T(ck);
  for (std::size_t i = begin; i < end; ++i) p[i] = p[i] * keep + weight * (x0[i] - s[i]);
}

void step(const DadaptSgdOptions& o, const detail::Job& job, const detail::Passes& passes, StepReport& report) {
  // lr = 0 or a zero first gradient: the reference divides by zero; here the step changes nothing.
  if (o.lr == 0.0) return;
  double sums[2];
  double g0_norm = o.g0_norm;  // 0: not measured yet (the first step)
  if (g0_norm == 0.0) {
    reducing_pass<2>(job, passes, sums, [&](auto* type, const TensorView& t, std::size_t b, std::size_t e, double* out) {
      if (group_options_of(o, job, t).lr == 0.0) {
        out[0] = out[1] = 0.0;
        return;
      }
      dadapt_sgd_grad_norm<std::remove_pointer_t<decltype(type)>>(t, b, e, job.grad_scale, out);
    });
    g0_norm = __builtin_sqrt(sums[0]);
    if (g0_norm == 0.0) return;
  }
  const double d = o.d;
  const double dlr = d * o.lr / g0_norm;
  reducing_pass<2>(job, passes, sums, [&](auto* type, const TensorView& t, std::size_t b, std::size_t e, double* out) {
    using T = std::remove_pointer_t<decltype(type)>;
    if (group_options_of(o, job, t).lr == 0.0) {
      out[0] = out[1] = 0.0;
      return;
    }
    with_flag(o.weight_decay != 0.0, [&](auto df) {
      dadapt_sgd_accumulate<T, df.value>(t, b, e, job.grad_scale, o.weight_decay, dlr, out);
    });
  });
  report.carried[2] = g0_norm;  // declaration order: d, numerator_weighted, g0_norm
  const double numerator_weighted = o.numerator_weighted + dlr * sums[0];
  const double sk_sq = sums[1];
  if (sk_sq == 0.0) return;  // nothing to estimate d from (the reference divides by zero)

  const double d_hat = 2.0 * numerator_weighted / __builtin_sqrt(sk_sq);
  const double ck = 1.0 - o.momentum;
  for_all_chunks(passes, [&](std::size_t first, std::size_t last) {
    for_each_chunk(job, first, last, [&](auto* type, const TensorView& t, std::size_t b, std::size_t e) {
      dadapt_sgd_update<std::remove_pointer_t<decltype(type)>>(t, b, e, ck);
    });
  });
  report.carried[0] = py_max(d, py_min(d_hat, d * o.growth_rate));
  report.carried[1] = numerator_weighted;
}

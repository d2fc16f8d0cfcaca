// Schedule-Free AdamW and SGD: the update equations are the equations of
// Declaration<AdamwScheduleFreeOptions> and Declaration<SgdScheduleFreeOptions>
// (cpp/include/gradstep/optim.hpp), shown by help(gs.AdamWScheduleFree) and
// help(gs.SGDScheduleFree): schedulefree 1.4.1's AdamWScheduleFree and
// SGDScheduleFree, which keep y in the param and move it without forming x.
//
// The per-step scalars (warmup, lr_max, the averaging weight c) are computed
// once per step in double with the reference's expressions. Every element is
// computed in double from its stored values and each new value rounded once
// to the element type, so a float32 step carries one rounding per stored
// value (the reference's float32 rounds after every operation).

// What one step of either optimizer needs besides its own options.
struct ScheduleFreeScalars {
  double lr;          // this step's rate: lr times the warmup factor
  double lr_max;      // the carried values after this step
  double weight_sum;
  double c;           // the weight of this step's z in the average x
  Lerp toward_z;      // y = lerp(y, z, c): y's move towards z
};

template <class Options>
ScheduleFreeScalars schedule_free_scalars(const Options& o, std::int64_t step) {
  const double k = double(step - 1);  // the reference's group['k'] before this step
  const double sched = k < o.warmup_steps ? (k + 1.0) / o.warmup_steps : 1.0;
  const double lr = o.lr * sched;
  const double lr_max = o.lr_max > lr ? o.lr_max : lr;  // Python's max(lr, lr_max)
  const double weight = __builtin_pow(k + 1.0, o.r) * __builtin_pow(lr_max, o.weight_lr_power);
  const double weight_sum = o.weight_sum + weight;
  // Python raises ZeroDivisionError for weight / 0.0, which the reference
  // catches as c = 0 (every rate so far 0 with weight_lr_power > 0).
  const double c = weight_sum != 0.0 ? weight / weight_sum : 0.0;
  return {lr, lr_max, weight_sum, c, lerp_weight(c)};
}

// y and z of element i after the step in direction u (the normalized,
// decayed gradient), with y_coeff = lr * (beta * (1 - c) - 1).
template <class T>
inline void schedule_free_move(T* __restrict y, T* __restrict z, std::size_t i, double u,
                               const ScheduleFreeScalars& s, double y_coeff) {
  const double yi = double(y[i]), zi = double(z[i]);
  y[i] = T(lerp(yi, zi, s.toward_z.from_end, s.toward_z.coeff) + y_coeff * u);
  z[i] = T(zi - s.lr * u);
}

inline void report_schedule_free(const ScheduleFreeScalars& s, StepReport& report) {
  // Declaration order of the carried fields: lr_max, weight_sum, train_mode
  // (the mode, as given).
  report.carried[0] = s.lr_max;
  report.carried[1] = s.weight_sum;
}

template <class T, bool kDecay>
void adamw_schedule_free_range(const TensorView& t, std::size_t begin, std::size_t end,
                               const AdamwScheduleFreeOptions& o, const ScheduleFreeScalars& s, double bc2,
                               double y_coeff, double grad_scale) {
  T* __restrict y = param_of<T>(t);
  const T* __restrict g = grad_of<T>(t);
  T* __restrict z = state_of<T>(t, 0);
  T* __restrict v = state_of<T>(t, 1);
  const double beta2 = o.beta2, one_minus_beta2 = 1.0 - o.beta2, eps = o.eps, wd = o.weight_decay;
  for (std::size_t i = begin; i < end; ++i) {
    const double gi = grad_scale * double(g[i]);  // ±1 (maximize) times any clipping factor
    const double vi = double(v[i]) * beta2 + one_minus_beta2 * gi * gi;
    v[i] = T(vi);
    double u = gi / (sqrt_(vi / bc2) + eps);
    if (kDecay) u = u + wd * double(y[i]);
    schedule_free_move(y, z, i, u, s, y_coeff);
  }
}

void step(const AdamwScheduleFreeOptions& o, const detail::Job& job, const detail::Passes& passes,
          StepReport& report) {
  const ScheduleFreeScalars s = schedule_free_scalars(o, job.step);
  const double bc2 = 1.0 - __builtin_pow(o.beta2, double(job.step));
  const double y_coeff = s.lr * (o.beta1 * (1.0 - s.c) - 1.0);
  for_all_chunks(passes, [&](std::size_t first, std::size_t last) {
    for_each_chunk(job, first, last, [&](auto* type, const TensorView& t, std::size_t b, std::size_t e) {
      using T = std::remove_pointer_t<decltype(type)>;
      with_flag(o.weight_decay != 0.0, [&](auto decay) {
        adamw_schedule_free_range<T, decay.value>(t, b, e, o, s, bc2, y_coeff, job.grad_scale);
      });
    });
  });
  report_schedule_free(s, report);
}

template <class T, bool kDecay>
void sgd_schedule_free_range(const TensorView& t, std::size_t begin, std::size_t end,
                             const SgdScheduleFreeOptions& o, const ScheduleFreeScalars& s, double y_coeff,
                             double grad_scale) {
  T* __restrict y = param_of<T>(t);
  const T* __restrict g = grad_of<T>(t);
  T* __restrict z = state_of<T>(t, 0);
  const double wd = o.weight_decay;
  for (std::size_t i = begin; i < end; ++i) {
    double u = grad_scale * double(g[i]);
    if (kDecay) u = u + wd * double(y[i]);
    schedule_free_move(y, z, i, u, s, y_coeff);
  }
}

void step(const SgdScheduleFreeOptions& o, const detail::Job& job, const detail::Passes& passes,
          StepReport& report) {
  const ScheduleFreeScalars s = schedule_free_scalars(o, job.step);
  const double y_coeff = s.lr * (o.momentum * (1.0 - s.c) - 1.0);
  for_all_chunks(passes, [&](std::size_t first, std::size_t last) {
    for_each_chunk(job, first, last, [&](auto* type, const TensorView& t, std::size_t b, std::size_t e) {
      using T = std::remove_pointer_t<decltype(type)>;
      with_flag(o.weight_decay != 0.0, [&](auto decay) {
        sgd_schedule_free_range<T, decay.value>(t, b, e, o, s, y_coeff, job.grad_scale);
      });
    });
  });
  report_schedule_free(s, report);
}

// train(): p = lerp(p, z, 1 - beta) takes x to y; eval(): p = lerp(p, z,
// 1 - 1/beta) takes y back to x (beta: beta1 or momentum; z is slot 0).
inline void schedule_free_switch(double beta, bool to_train, const detail::Job& job,
                                 const detail::Passes& passes) {
  const Lerp w = lerp_weight(to_train ? 1.0 - beta : 1.0 - 1.0 / beta);
  for_all_chunks(passes, [&](std::size_t first, std::size_t last) {
    for_each_chunk(job, first, last, [&](auto* type, const TensorView& t, std::size_t b, std::size_t e) {
      using T = std::remove_pointer_t<decltype(type)>;
      T* __restrict p = param_of<T>(t);
      const T* __restrict z = state_of<T>(t, 0);
      for (std::size_t i = b; i < e; ++i) p[i] = T(lerp(double(p[i]), double(z[i]), w.from_end, w.coeff));
    });
  });
}

void switch_mode(const AdamwScheduleFreeOptions& o, bool on, const detail::Job& job, const detail::Passes& passes) {
  schedule_free_switch(o.beta1, on, job, passes);
}
void switch_mode(const SgdScheduleFreeOptions& o, bool on, const detail::Job& job, const detail::Passes& passes) {
  schedule_free_switch(o.momentum, on, job, passes);
}

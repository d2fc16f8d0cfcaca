// RMSprop: the update equations are Declaration<RmspropOptions>::equations
// (cpp/include/gradstep/optim.hpp), shown by help(gs.RMSprop); torch.optim.RMSprop.
//
// Centered, the variance sq - ga*ga subtracts two nearly equal numbers when
// the gradient barely varies (small alpha, steady gradients): any rounding in
// sq or ga is amplified by sq / (sq - ga*ga). So for float32 buffers the
// centered moments are updated and subtracted in double, from the stored
// float32 states, and rounded to float32 once, when stored; the variance uses
// the unrounded values. What is left of float32 error is the storage of sq
// and ga between steps. Plain IEEE double operations in the same order on
// every target, so every ISA still gives the same bits; for float64 buffers
// this is exactly the arithmetic of the plain form.

template <class T, bool kL2, bool kMomentum, bool kCentered>
void rmsprop_range(const TensorView& t, std::size_t begin, std::size_t end, const RmspropOptions& o,
                   Lerp ga_lerp, double grad_scale) {
  T* __restrict p = param_of<T>(t);
  const T* __restrict g = grad_of<T>(t);
  T* __restrict sq = state_of<T>(t, 0);
  T* __restrict buf = state_of<T>(t, 1);
  T* __restrict ga = state_of<T>(t, 2);
  const T scale = T(grad_scale);  // ±1 (maximize) times any clipping factor
  const T wd = T(o.weight_decay), alpha = T(o.alpha), one_minus_alpha = T(1.0 - o.alpha);
  const T eps = T(o.eps), mom = T(o.momentum), neg_lr = T(-o.lr);
  const double alpha_d = o.alpha, one_minus_alpha_d = 1.0 - o.alpha;
  const bool ga_from_end = ga_lerp.from_end;
  for (std::size_t i = begin; i < end; ++i) {
    T gi = scale * g[i];
    if (kL2) gi = gi + wd * p[i];
    T avg;
    if (kCentered) {
      const double gd = double(gi);
      const double s = double(sq[i]) * alpha_d + one_minus_alpha_d * gd * gd;
      const double a = lerp(double(ga[i]), gd, ga_from_end, ga_lerp.coeff);
      sq[i] = T(s);
      ga[i] = T(a);
      avg = T(sqrt_(s - a * a)) + eps;
    } else {
      const T s = sq[i] * alpha + one_minus_alpha * gi * gi;
      sq[i] = s;
      avg = sqrt_(s) + eps;
    }
    if (kMomentum) {
      const T b = buf[i] * mom + gi / avg;
      buf[i] = b;
      p[i] = p[i] + neg_lr * b;
    } else {
      p[i] = p[i] + neg_lr * (gi / avg);
    }
  }
}

void chunks(const RmspropOptions& o, const detail::Job& job, std::size_t first,
                    std::size_t last) {
  const Lerp ga_lerp = lerp_weight(1.0 - o.alpha);
  for_each_chunk(job, first, last, [&](auto* type, const TensorView& t, std::size_t b, std::size_t e) {
    using T = std::remove_pointer_t<decltype(type)>;
    with_flag(o.weight_decay != 0.0, [&](auto l2) {
      with_flag(o.momentum > 0.0, [&](auto mom) {
        with_flag(o.centered, [&](auto centered) {
          rmsprop_range<T, l2.value, mom.value, centered.value>(t, b, e, o, ga_lerp, job.grad_scale);
        });
      });
    });
  });
}

// Fit y = X w by least squares with gradstep's AdamW, in plain C++.
// Prints the ISA in use, the loss every 100 steps and the final weights.
#include <gradstep/gradstep.hpp>

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

int main() {
  constexpr int kSamples = 256, kFeatures = 8, kSteps = 500;
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  std::vector<float> x(kSamples * kFeatures), y(kSamples), true_w(kFeatures);
  for (int j = 0; j < kFeatures; ++j) true_w[j] = float(j + 1) / kFeatures;
  for (int i = 0; i < kSamples; ++i) {
    y[i] = 0;
    for (int j = 0; j < kFeatures; ++j) {
      x[i * kFeatures + j] = normal(rng);
      y[i] += x[i * kFeatures + j] * true_w[j];
    }
  }

  std::vector<float> w(kFeatures, 0.f), grad(kFeatures), exp_avg(kFeatures), exp_avg_sq(kFeatures);
  gradstep::TensorView view;
  view.param = w.data();
  view.grad = grad.data();
  view.state[0] = exp_avg.data();
  view.state[1] = exp_avg_sq.data();
  view.size = w.size();
  view.dtype = gradstep::DType::f32;

  gradstep::AdamOptions adamw;
  adamw.lr = 0.05;
  adamw.weight_decay = 1e-4;
  adamw.decoupled_weight_decay = true;
  // Checked once; afterwards only the gradient values change.
  gradstep::TensorSet set(&view, 1, gradstep::state_mask(adamw));

  std::printf("isa %s\n", gradstep::isa_name(gradstep::active_isa()));
  double loss = 0;
  for (int k = 1; k <= kSteps; ++k) {
    loss = 0;
    for (float& g : grad) g = 0;
    for (int i = 0; i < kSamples; ++i) {
      float err = -y[i];
      for (int j = 0; j < kFeatures; ++j) err += x[i * kFeatures + j] * w[j];
      loss += double(err) * err / kSamples;
      for (int j = 0; j < kFeatures; ++j) grad[j] += 2.f * err * x[i * kFeatures + j] / kSamples;
    }
    if (k == 1 || k % 100 == 0) std::printf("step %d loss %.6g\n", k, loss);
    set.step(adamw, k);
  }
  std::printf("weights");
  for (float v : w) std::printf(" %.4f", v);
  std::printf("\n");
  return loss < 1e-3 ? 0 : 1;
}

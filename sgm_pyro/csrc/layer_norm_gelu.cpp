// LayerNorm then exact GELU on the rows of a float32 CPU matrix, forward and backward, one pass per
// row each way (sgm_pyro/native.py builds it, sgm_pyro/nn/fused.py calls it; docs/results.md §2 measures it).
//
// Eager PyTorch runs the bias add, LayerNorm, GELU and their backward as separate kernels, each a
// pass over activations far larger than the cache: at the reference pose network's widest layer
// (5,120 x 2,048) that is 27 ms of a 536 ms step on a 2-core Xeon. Here each row is read once from
// memory into L1, and the erf and exp that bound GELU share one branch-free exponential, so the
// loops vectorise. Accuracy: the normal tail by Abramowitz & Stegun 7.1.26 (absolute error below
// 1.5e-7 in erf), the exponential to about 2e-8 relative; LayerNorm's statistics in two passes
// over the row, as float32.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <tuple>

namespace {

// e^x for x <= 0: x = n ln2 + r with |r| <= ln2 / 2, e^r by its Taylor series to r^7.
inline float exp_nonpositive(float x) {
  x = std::max(x, -87.0f);
  const float n = std::floor(x * 1.44269504088896341f + 0.5f);
  const float r = x - n * 0.693145751953125f - n * 1.428606765330187045e-06f;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  return p * __builtin_bit_cast(float, (static_cast<int32_t>(n) + 127) << 23);
}

// Phi(u), given e = exp(-u^2 / 2): the tail beyond |u| is t P(t) e with t = 1 / (1 + p |u| / sqrt 2).
inline float normal_cdf(float u, float e) {
  const float t = 1.0f / (1.0f + 0.3275911f * 0.70710678118654752f * std::fabs(u));
  const float tail =
      0.5f * e * t * (0.254829592f + t * (-0.284496736f + t * (1.421413741f + t * (-1.453152027f + t * 1.061405429f))));
  return u >= 0.0f ? 1.0f - tail : tail;
}

constexpr float kInvSqrt2Pi = 0.3989422804014327f;

void check(const at::Tensor& h, const at::Tensor& bias, const at::Tensor& weight, const at::Tensor& shift) {
  TORCH_CHECK(h.dim() == 2 && h.is_contiguous() && h.scalar_type() == at::kFloat && h.device().is_cpu(),
              "layer_norm_gelu: expected a contiguous 2-d float32 CPU tensor, got ", h.sizes(), " ", h.scalar_type());
  for (const auto* v : {&bias, &weight, &shift}) {
    TORCH_CHECK(v->dim() == 1 && v->size(0) == h.size(1) && v->is_contiguous() && v->scalar_type() == at::kFloat,
                "layer_norm_gelu: expected contiguous float32 vectors of length ", h.size(1), ", got ", v->sizes());
  }
}

// y = GELU(LayerNorm(h + bias) * weight + shift); also the rows' mean and 1 / std for the backward.
std::tuple<at::Tensor, at::Tensor, at::Tensor> forward(const at::Tensor& h, const at::Tensor& bias,
                                                       const at::Tensor& weight, const at::Tensor& shift,
                                                       double eps) {
  check(h, bias, weight, shift);
  const int64_t rows = h.size(0), d = h.size(1);
  at::Tensor y = at::empty_like(h), mean = at::empty({rows}, h.options()), rstd = at::empty({rows}, h.options());
  const float* H = h.const_data_ptr<float>();
  const float* B = bias.const_data_ptr<float>();
  const float* W = weight.const_data_ptr<float>();
  const float* S = shift.const_data_ptr<float>();
  float* Y = y.data_ptr<float>();
  float* M = mean.data_ptr<float>();
  float* R = rstd.data_ptr<float>();
  const float e = static_cast<float>(eps), inv_d = 1.0f / static_cast<float>(d);
  at::parallel_for(0, rows, 1, [=](int64_t lo, int64_t hi) {
    const float* __restrict b = B;
    const float* __restrict w = W;
    const float* __restrict s = S;
    for (int64_t i = lo; i < hi; ++i) {
      const float* __restrict x = H + i * d;
      float* __restrict out = Y + i * d;
      float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
      for (int64_t j = 0; j < d; ++j) sum += x[j] + b[j];
      const float m = sum * inv_d;
      float var = 0.0f;
#pragma omp simd reduction(+ : var)
      for (int64_t j = 0; j < d; ++j) {
        const float c = x[j] + b[j] - m;
        var += c * c;
      }
      const float rs = 1.0f / std::sqrt(var * inv_d + e);
      M[i] = m;
      R[i] = rs;
#pragma omp simd
      for (int64_t j = 0; j < d; ++j) {
        const float u = (x[j] + b[j] - m) * rs * w[j] + s[j];
        out[j] = u * normal_cdf(u, exp_nonpositive(-0.5f * u * u));
      }
    }
  });
  return {y, mean, rstd};
}

// Gradients of the forward's y with respect to h (= that of the bias's input), bias, weight, shift.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward(const at::Tensor& grad, const at::Tensor& h,
                                                                    const at::Tensor& bias, const at::Tensor& weight,
                                                                    const at::Tensor& shift, const at::Tensor& mean,
                                                                    const at::Tensor& rstd) {
  check(h, bias, weight, shift);
  TORCH_CHECK(grad.sizes() == h.sizes() && grad.is_contiguous() && grad.scalar_type() == at::kFloat,
              "layer_norm_gelu_backward: expected a contiguous float32 gradient of shape ", h.sizes());
  const int64_t rows = h.size(0), d = h.size(1);
  at::Tensor dh = at::empty_like(h);
  // per thread: the weight, shift and bias gradients' partial column sums (static split: deterministic)
  at::Tensor partial = at::zeros({at::get_num_threads(), 3, d}, h.options());
  const float* G = grad.const_data_ptr<float>();
  const float* H = h.const_data_ptr<float>();
  const float* B = bias.const_data_ptr<float>();
  const float* W = weight.const_data_ptr<float>();
  const float* S = shift.const_data_ptr<float>();
  const float* M = mean.const_data_ptr<float>();
  const float* R = rstd.const_data_ptr<float>();
  float* DH = dh.data_ptr<float>();
  float* P = partial.data_ptr<float>();
  const float inv_d = 1.0f / static_cast<float>(d);
  at::parallel_for(0, rows, 1, [=](int64_t lo, int64_t hi) {
    float* __restrict dw = P + at::get_thread_num() * 3 * d;
    float* __restrict ds = dw + d;
    float* __restrict db = ds + d;
    const float* __restrict b = B;
    const float* __restrict w = W;
    const float* __restrict s = S;
    for (int64_t i = lo; i < hi; ++i) {
      const float* __restrict x = H + i * d;
      const float* __restrict g = G + i * d;
      float* __restrict out = DH + i * d;
      const float m = M[i], rs = R[i];
      float sum_g = 0.0f, sum_gx = 0.0f;
#pragma omp simd reduction(+ : sum_g, sum_gx)
      for (int64_t j = 0; j < d; ++j) {
        const float xh = (x[j] + b[j] - m) * rs;
        const float u = xh * w[j] + s[j];
        const float ex = exp_nonpositive(-0.5f * u * u);
        const float gu = g[j] * (normal_cdf(u, ex) + u * kInvSqrt2Pi * ex);
        dw[j] += gu * xh;
        ds[j] += gu;
        const float gx = gu * w[j];
        out[j] = gx;
        sum_g += gx;
        sum_gx += gx * xh;
      }
      const float c1 = sum_g * inv_d, c2 = sum_gx * inv_d;
#pragma omp simd
      for (int64_t j = 0; j < d; ++j) {
        const float xh = (x[j] + b[j] - m) * rs;
        const float o = rs * (out[j] - c1 - xh * c2);
        out[j] = o;
        db[j] += o;
      }
    }
  });
  at::Tensor sums = partial.sum(0);
  return {dh, sums[2], sums[0], sums[1]};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(sgm_pyro_native, m) {
  m.def("layer_norm_gelu(Tensor h, Tensor bias, Tensor weight, Tensor shift, float eps) -> (Tensor, Tensor, Tensor)");
  m.def("layer_norm_gelu_backward(Tensor grad, Tensor h, Tensor bias, Tensor weight, Tensor shift, Tensor mean, "
        "Tensor rstd) -> (Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(sgm_pyro_native, CPU, m) {
  m.impl("layer_norm_gelu", &forward);
  m.impl("layer_norm_gelu_backward", &backward);
}

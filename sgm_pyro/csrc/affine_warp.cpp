// Bilinear affine warps of float32 CPU images with zero padding, forward and backward, computing
// each pixel's sampling point from the image's 2x3 matrix on the fly (sgm_pyro/native.py builds it,
// sgm_pyro/groups/affine.py calls it; docs/results.md §2 measures it).
//
// F.grid_sample needs the sampling grid as a tensor: at batch 512 with 5 draws the stage-1 loss
// writes and reads grids of 16 to 32 MB per warp and reduces the grid's gradient back to the
// matrices in another pass. Here the grid never exists: the output, the six matrix gradients and
// (where asked) the image gradient come from one pass over each image, which is copied into a
// zero-ringed buffer in L1 so that no tap needs a bounds test. Semantics are those of
// F.grid_sample(x, F.affine_grid(theta, align_corners=True), "bilinear", "zeros", align_corners=True).
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <tuple>
#include <vector>

namespace {

// A ring of one zero pixel before each row and column, two after: a sampling point clamped to
// [-1, n] has both of its taps inside.
struct Padded {
  int64_t h, w, stride, plane;
  Padded(int64_t h_, int64_t w_) : h(h_), w(w_), stride(w_ + 3), plane((h_ + 3) * (w_ + 3)) {}
  int64_t at(int64_t y, int64_t x) const { return (y + 1) * stride + (x + 1); }
};

inline float coordinate(int64_t i, int64_t n) { return n > 1 ? -1.0f + 2.0f * static_cast<float>(i) / (n - 1) : 0.0f; }

// Per image: every output pixel's first tap in the padded plane, its two weights, whether the
// point lies strictly inside the padded frame (its gradient is zero outside), and 0 or NaN to add
// to the sample (NaN where the point is not finite: grid_sample's NaN, not a silent zero). One flat
// loop over the H*W pixels, so that it vectorises without a short-row remainder.
struct Taps {
  std::vector<float> xs, ys, wx, wy, inside, poison;
  std::vector<int32_t> index;
  explicit Taps(const Padded& p) : xs(p.h * p.w), ys(p.h * p.w), wx(p.h * p.w), wy(p.h * p.w), inside(p.h * p.w),
                                   poison(p.h * p.w), index(p.h * p.w) {
    for (int64_t i = 0; i < p.h; ++i)
      for (int64_t j = 0; j < p.w; ++j) {
        xs[i * p.w + j] = coordinate(j, p.w);
        ys[i * p.w + j] = coordinate(i, p.h);
      }
  }

  // The matrix rows (a0 a1 a2; b0 b1 b2), in pixel units: ix = sx (a0 x + a1 y + a2 + 1).
  void compute(const float* th, const Padded& p) {
    const float sx = 0.5f * static_cast<float>(p.w - 1), sy = 0.5f * static_cast<float>(p.h - 1);
    const float a0 = sx * th[0], a1 = sx * th[1], a2 = sx * (th[2] + 1.0f);
    const float b0 = sy * th[3], b1 = sy * th[4], b2 = sy * (th[5] + 1.0f);
    const float hi_x = static_cast<float>(p.w), hi_y = static_cast<float>(p.h);
    const int32_t stride = static_cast<int32_t>(p.stride);
    const float* __restrict x = xs.data();
    const float* __restrict y = ys.data();
    float* __restrict fx_w = wx.data();
    float* __restrict fy_w = wy.data();
    float* __restrict in = inside.data();
    float* __restrict nan = poison.data();
    int32_t* __restrict q = index.data();
    const int64_t n = p.h * p.w;
#pragma omp simd
    for (int64_t k = 0; k < n; ++k) {
      const float rx = a0 * x[k] + a1 * y[k] + a2, ry = b0 * x[k] + b1 * y[k] + b2;
      // comparisons, so that a NaN coordinate lands on -1 (a zero tap), never on a wild index
      float ix = rx > -1.0f ? rx : -1.0f, iy = ry > -1.0f ? ry : -1.0f;
      ix = ix < hi_x ? ix : hi_x;
      iy = iy < hi_y ? iy : hi_y;
      const float fx = std::floor(ix), fy = std::floor(iy);
      fx_w[k] = ix - fx;
      fy_w[k] = iy - fy;
      q[k] = (static_cast<int32_t>(fy) + 1) * stride + static_cast<int32_t>(fx) + 1;
      in[k] = (rx > -1.0f && rx < hi_x && ry > -1.0f && ry < hi_y) ? 1.0f : 0.0f;
      nan[k] = (rx - rx) + (ry - ry);
    }
  }
};

void fill_padded(const float* src, int64_t c, const Padded& p, float* dst) {
  std::fill(dst, dst + c * p.plane, 0.0f);
  for (int64_t k = 0; k < c; ++k)
    for (int64_t y = 0; y < p.h; ++y)
      std::copy(src + (k * p.h + y) * p.w, src + (k * p.h + y + 1) * p.w, dst + k * p.plane + p.at(y, 0));
}

// One thread's working set: an image's C padded planes and its taps, loaded image by image.
struct Sampler {
  Padded p;
  int64_t c;
  std::vector<float> planes;
  Taps t;
  Sampler(int64_t c_, int64_t h, int64_t w) : p(h, w), c(c_), planes(c_ * p.plane), t(p) {}
  void load(const float* images, const float* theta, int64_t b) {
    fill_padded(images + b * c * p.h * p.w, c, p, planes.data());
    t.compute(theta + 6 * b, p);
  }
  const float* plane(int64_t k) const { return planes.data() + k * p.plane; }
};

void check(const at::Tensor& x, const at::Tensor& theta) {
  TORCH_CHECK(x.dim() == 4 && x.is_contiguous() && x.scalar_type() == at::kFloat && x.device().is_cpu(),
              "affine_warp: expected contiguous (N, C, H, W) float32 CPU images, got ", x.sizes(), " ", x.scalar_type());
  TORCH_CHECK(theta.dim() == 3 && theta.size(0) == x.size(0) && theta.size(1) == 2 && theta.size(2) == 3 &&
                  theta.is_contiguous() && theta.scalar_type() == at::kFloat,
              "affine_warp: expected contiguous (", x.size(0), ", 2, 3) float32 matrices, got ", theta.sizes());
  TORCH_CHECK((x.size(2) + 3) * (x.size(3) + 3) < (int64_t{1} << 31), "affine_warp: images too large");
}

at::Tensor forward(const at::Tensor& x, const at::Tensor& theta) {
  check(x, theta);
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3), hw = h * w;
  at::Tensor out = at::empty_like(x);
  const float* X = x.const_data_ptr<float>();
  const float* TH = theta.const_data_ptr<float>();
  float* O = out.data_ptr<float>();
  at::parallel_for(0, n, 1, [=](int64_t lo, int64_t hi) {
    Sampler sm(c, h, w);
    const Taps& t = sm.t;
    const int32_t s = static_cast<int32_t>(sm.p.stride);
    for (int64_t b = lo; b < hi; ++b) {
      sm.load(X, TH, b);
      const int32_t* __restrict index = t.index.data();
      const float* __restrict wx = t.wx.data();
      const float* __restrict wy = t.wy.data();
      const float* __restrict nan = t.poison.data();
      for (int64_t k = 0; k < c; ++k) {
        const float* __restrict src = sm.plane(k);
        float* __restrict dst = O + (b * c + k) * hw;
#pragma omp simd
        for (int64_t m = 0; m < hw; ++m) {
          const int32_t q = index[m];
          const float top = src[q] + wx[m] * (src[q + 1] - src[q]);
          const float bottom = src[q + s] + wx[m] * (src[q + s + 1] - src[q + s]);
          dst[m] = top + wy[m] * (bottom - top) + nan[m];
        }
      }
    }
  });
  return out;
}

// The gradients with respect to the images (an empty tensor unless ``input_grad``) and the matrices.
std::tuple<at::Tensor, at::Tensor> backward(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& theta,
                                            bool input_grad) {
  check(x, theta);
  TORCH_CHECK(grad.sizes() == x.sizes() && grad.is_contiguous() && grad.scalar_type() == at::kFloat,
              "affine_warp_backward: expected a contiguous float32 gradient of shape ", x.sizes());
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3), hw = h * w;
  at::Tensor dtheta = at::empty({n, 2, 3}, theta.options());
  at::Tensor dx = input_grad ? at::empty_like(x) : at::empty({0}, x.options());
  const float* G = grad.const_data_ptr<float>();
  const float* X = x.const_data_ptr<float>();
  const float* TH = theta.const_data_ptr<float>();
  float* DT = dtheta.data_ptr<float>();
  float* DX = input_grad ? dx.data_ptr<float>() : nullptr;
  at::parallel_for(0, n, 1, [=](int64_t lo, int64_t hi) {
    Sampler sm(c, h, w);
    const Taps& t = sm.t;
    const Padded& p = sm.p;
    std::vector<float> gbuf(input_grad ? c * p.plane : 0), gix(hw), giy(hw);
    const float sx = 0.5f * static_cast<float>(w - 1), sy = 0.5f * static_cast<float>(h - 1);
    const int32_t s = static_cast<int32_t>(p.stride);
    for (int64_t b = lo; b < hi; ++b) {
      sm.load(X, TH, b);
      const int32_t* __restrict index = t.index.data();
      const float* __restrict wx = t.wx.data();
      const float* __restrict wy = t.wy.data();
      float* __restrict dix = gix.data();
      float* __restrict diy = giy.data();
      std::fill(gix.begin(), gix.end(), 0.0f);
      std::fill(giy.begin(), giy.end(), 0.0f);
      if (input_grad) std::fill(gbuf.begin(), gbuf.end(), 0.0f);
      for (int64_t k = 0; k < c; ++k) {
        const float* __restrict src = sm.plane(k);
        const float* __restrict g = G + (b * c + k) * hw;
#pragma omp simd
        for (int64_t m = 0; m < hw; ++m) {
          const int32_t q = index[m];
          const float v00 = src[q], v01 = src[q + 1], v10 = src[q + s], v11 = src[q + s + 1];
          const float cross = v11 - v10 - v01 + v00;
          dix[m] += g[m] * (v01 - v00 + wy[m] * cross);
          diy[m] += g[m] * (v10 - v00 + wx[m] * cross);
        }
        if (input_grad) {
          float* gsrc = gbuf.data() + k * p.plane;
          for (int64_t m = 0; m < hw; ++m) {  // a scatter: neighbouring pixels may share taps
            const int32_t q = index[m];
            const float gv = g[m], ax = wx[m], ay = wy[m];
            gsrc[q] += gv * (1.0f - ax) * (1.0f - ay);
            gsrc[q + 1] += gv * ax * (1.0f - ay);
            gsrc[q + s] += gv * (1.0f - ax) * ay;
            gsrc[q + s + 1] += gv * ax * ay;
          }
        }
      }
      const float* __restrict xs = t.xs.data();
      const float* __restrict ys = t.ys.data();
      const float* __restrict inside = t.inside.data();
      float d0 = 0.0f, d1 = 0.0f, d2 = 0.0f, d3 = 0.0f, d4 = 0.0f, d5 = 0.0f;
#pragma omp simd reduction(+ : d0, d1, d2, d3, d4, d5)
      for (int64_t m = 0; m < hw; ++m) {
        const float gx = dix[m] * inside[m], gy = diy[m] * inside[m];
        d0 += gx * xs[m];
        d1 += gx * ys[m];
        d2 += gx;
        d3 += gy * xs[m];
        d4 += gy * ys[m];
        d5 += gy;
      }
      float* dt = DT + 6 * b;
      dt[0] = sx * d0;
      dt[1] = sx * d1;
      dt[2] = sx * d2;
      dt[3] = sy * d3;
      dt[4] = sy * d4;
      dt[5] = sy * d5;
      if (input_grad) {
        for (int64_t k = 0; k < c; ++k)
          for (int64_t y = 0; y < h; ++y) {
            const float* row = gbuf.data() + k * p.plane + p.at(y, 0);
            std::copy(row, row + w, DX + ((b * c + k) * h + y) * w);
          }
      }
    }
  });
  return {dx, dtheta};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(sgm_pyro_native, m) {
  m.def("affine_warp(Tensor x, Tensor theta) -> Tensor");
  m.def("affine_warp_backward(Tensor grad, Tensor x, Tensor theta, bool input_grad) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(sgm_pyro_native, CPU, m) {
  m.impl("affine_warp", &forward);
  m.impl("affine_warp_backward", &backward);
}

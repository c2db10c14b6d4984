// Direct sparse convolution on a CPU: y[n, o] = bias[o] + sum over the kept weights w = W[o, c, i, j] of
// w * (input plane c shifted by tap (i, j)). The weight is the CSR matrix (out, in*kh*kw) of
// prunekit.runtime.sparse_modules; the unfolded input (im2col) is never built.
//
// Stride 1 ("wide" path): the input is zero-padded once per image, so for a whole output plane computed on
// the padded width, the inputs one tap reads are a single contiguous run; the inner loop is one long,
// vectorisable axpy per tap (four taps fused per pass over the output), and the extra columns of each row
// are cropped when the plane is copied out. Any other stride: a row-by-row loop over each tap's valid output
// range (no padded copy). Work is split over (image, output channel) with at::parallel_for, so it uses
// torch's intra-op threads.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

namespace {

struct Geometry {
  int64_t kh, kw, sh, sw, ph, pw, dh, dw;
};

// Number of output positions o in [0, out) with 0 <= o * stride + offset < size.
inline void valid_range(int64_t offset, int64_t stride, int64_t size, int64_t out, int64_t& lo, int64_t& hi) {
  lo = offset >= 0 ? 0 : (-offset + stride - 1) / stride;
  hi = size - 1 - offset < 0 ? 0 : std::min(out, (size - 1 - offset) / stride + 1);
  if (hi < lo) hi = lo;
}

// y[0, len) += w0 * s0 + w1 * s1 + w2 * s2 + w3 * s3, elementwise.
inline void axpy4(float* __restrict y, const float* __restrict s0, const float* __restrict s1,
                  const float* __restrict s2, const float* __restrict s3,
                  float w0, float w1, float w2, float w3, int64_t len) {
  for (int64_t k = 0; k < len; ++k) y[k] += w0 * s0[k] + w1 * s1[k] + w2 * s2[k] + w3 * s3[k];
}

inline void axpy(float* __restrict y, const float* __restrict s, float w, int64_t len) {
  for (int64_t k = 0; k < len; ++k) y[k] += w * s[k];
}

// One output plane of a stride-1 convolution on the padded image `xp` (C, Hp, Wp): `wide` (Ho * Wp) is
// computed on the padded width, then its first Wo columns of each row are copied to `y` (Ho, Wo).
// KH, KW: the kernel size when known at compile time (3×3: decoding a tap divides by constants, which the
// compiler turns into multiplications), else 0 (read from `g`).
template <int KH, int KW>
void plane_wide(const float* xp, int64_t Hp, int64_t Wp, int64_t Ho, int64_t Wo, const Geometry& g,
                const int32_t* col, const float* val, int64_t begin, int64_t end, float bias, float* wide,
                float* y) {
  const int64_t kw = KW ? KW : g.kw, taps = (KH ? KH : g.kh) * kw;
  const int64_t len = Ho * Wp - (kw - 1) * g.dw;  // the rest of the last row is cropped anyway
  std::fill(wide, wide + Ho * Wp, bias);
  auto source = [&](int64_t p) {
    const int64_t c = col[p] / taps, r = col[p] % taps;
    return xp + c * Hp * Wp + (r / kw) * g.dh * Wp + (r % kw) * g.dw;
  };
  int64_t p = begin;
  for (; p + 4 <= end; p += 4)
    axpy4(wide, source(p), source(p + 1), source(p + 2), source(p + 3), val[p], val[p + 1], val[p + 2],
          val[p + 3], len);
  for (; p < end; ++p) axpy(wide, source(p), val[p], len);
  for (int64_t oh = 0; oh < Ho; ++oh) std::copy(wide + oh * Wp, wide + oh * Wp + Wo, y + oh * Wo);
}

// One output plane of any convolution on the unpadded image `x` (C, H, W), tap by tap, row by row.
void plane_rows(const float* x, int64_t H, int64_t W, int64_t Ho, int64_t Wo, const Geometry& g,
                const int32_t* col, const float* val, int64_t begin, int64_t end, float bias, float* y) {
  const int64_t taps = g.kh * g.kw;
  std::fill(y, y + Ho * Wo, bias);
  for (int64_t p = begin; p < end; ++p) {
    const int64_t c = col[p] / taps, r = col[p] % taps;
    const int64_t row_offset = (r / g.kw) * g.dh - g.ph, col_offset = (r % g.kw) * g.dw - g.pw;
    int64_t oh_lo, oh_hi, ow_lo, ow_hi;
    valid_range(row_offset, g.sh, H, Ho, oh_lo, oh_hi);
    valid_range(col_offset, g.sw, W, Wo, ow_lo, ow_hi);
    const float* plane = x + c * H * W;
    const float w = val[p];
    for (int64_t oh = oh_lo; oh < oh_hi; ++oh) {
      const float* src = plane + (oh * g.sh + row_offset) * W + col_offset;
      float* dst = y + oh * Wo;
      if (g.sw == 1) {
        for (int64_t ow = ow_lo; ow < ow_hi; ++ow) dst[ow] += w * src[ow];
      } else {
        for (int64_t ow = ow_lo; ow < ow_hi; ++ow) dst[ow] += w * src[ow * g.sw];
      }
    }
  }
}

}  // namespace

// x (N, C, H, W) float32; crow (O + 1), col (nnz) int32; values (nnz) float32; bias (O) or None;
// geometry = {C, kh, kw, sh, sw, ph, pw, dh, dw}. Returns y (N, O, Ho, Wo).
torch::Tensor sparse_conv2d(torch::Tensor x, torch::Tensor crow, torch::Tensor col, torch::Tensor values,
                            c10::optional<torch::Tensor> bias, std::vector<int64_t> geometry) {
  TORCH_CHECK(x.dim() == 4 && x.scalar_type() == torch::kFloat && x.device().is_cpu(),
              "sparse_conv2d: x must be a float32 CPU tensor (N, C, H, W)");
  TORCH_CHECK(geometry.size() == 9, "sparse_conv2d: geometry is {C, kh, kw, sh, sw, ph, pw, dh, dw}");
  TORCH_CHECK(x.size(1) == geometry[0], "sparse_conv2d: expected ", geometry[0], " input channels, got ",
              x.size(1));
  const Geometry g{geometry[1], geometry[2], geometry[3], geometry[4],
                   geometry[5], geometry[6], geometry[7], geometry[8]};
  TORCH_CHECK(crow.scalar_type() == torch::kInt && col.scalar_type() == torch::kInt &&
                  values.scalar_type() == torch::kFloat && crow.is_contiguous() && col.is_contiguous() &&
                  values.is_contiguous() && col.numel() == values.numel(),
              "sparse_conv2d: the weight must be contiguous CSR int32 indices and float32 values");
  TORCH_CHECK(!bias.has_value() || (bias->scalar_type() == torch::kFloat && bias->numel() == crow.numel() - 1),
              "sparse_conv2d: bias must be float32 with one value per output channel");
  x = x.contiguous();
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), O = crow.numel() - 1;
  const int64_t Ho = (H + 2 * g.ph - g.dh * (g.kh - 1) - 1) / g.sh + 1;
  const int64_t Wo = (W + 2 * g.pw - g.dw * (g.kw - 1) - 1) / g.sw + 1;
  TORCH_CHECK(Ho > 0 && Wo > 0, "sparse_conv2d: input ", H, "x", W, " is smaller than the kernel");
  auto y = torch::empty({N, O, Ho, Wo}, x.options());
  const int32_t* crow_p = crow.data_ptr<int32_t>();
  const int32_t* col_p = col.data_ptr<int32_t>();
  const float* val_p = values.data_ptr<float>();
  const float* bias_p = bias.has_value() ? bias->data_ptr<float>() : nullptr;
  float* y_p = y.data_ptr<float>();
  const bool wide = g.sh == 1 && g.sw == 1;
  const float* x_p = x.data_ptr<float>();
  // Stride 1 with padding: the zero-padded batch, a tensor so that memory measurements see it; filled here
  // (a plain copy costs less than a padding op's dispatch at batch 1).
  torch::Tensor padded;
  int64_t Hp = H, Wp = W;
  if (wide && (g.ph || g.pw)) {
    Hp = H + 2 * g.ph;
    Wp = W + 2 * g.pw;
    padded = torch::zeros({N, C, Hp, Wp}, x.options());
    float* padded_p = padded.data_ptr<float>();
    for (int64_t plane = 0; plane < N * C; ++plane)
      for (int64_t h = 0; h < H; ++h)
        std::copy(x_p + (plane * H + h) * W, x_p + (plane * H + h + 1) * W,
                  padded_p + (plane * Hp + h + g.ph) * Wp + g.pw);
    x_p = padded_p;
  }
  at::parallel_for(0, N * O, 1, [&](int64_t first, int64_t last) {
    std::vector<float> scratch(wide ? Ho * Wp : 0);
    for (int64_t index = first; index < last; ++index) {
      const int64_t n = index / O, o = index % O;
      const float b = bias_p ? bias_p[o] : 0.0f;
      float* out = y_p + index * Ho * Wo;
      if (wide && g.kh == 3 && g.kw == 3)
        plane_wide<3, 3>(x_p + n * C * Hp * Wp, Hp, Wp, Ho, Wo, g, col_p, val_p, crow_p[o], crow_p[o + 1], b,
                         scratch.data(), out);
      else if (wide)
        plane_wide<0, 0>(x_p + n * C * Hp * Wp, Hp, Wp, Ho, Wo, g, col_p, val_p, crow_p[o], crow_p[o + 1], b,
                         scratch.data(), out);
      else
        plane_rows(x_p + n * C * H * W, H, W, Ho, Wo, g, col_p, val_p, crow_p[o], crow_p[o + 1], b, out);
    }
  });
  return y;
}

// Direct sparse convolution on a CPU: y[n, o] = bias[o] + sum over the kept weights w = W[o, c, i, j] of
// w * (input plane c shifted by tap (i, j)). The weight is the CSR matrix (out, in*kh*kw) of
// prunekit.runtime.sparse_modules; the unfolded input (im2col) is never built.
//
// The input is zero-padded once per call and, for a stride s > 1, split into its s_h * s_w phases (rows
// a, a + s_h, a + 2 s_h, ... and likewise columns). In that layout the inputs one tap reads for a whole
// output plane, computed on the phase's width (a few extra columns per row), are one contiguous run: the
// inner loop is one long, vectorisable axpy per kept weight (four fused per pass over the output), and the
// extra columns are cropped when the plane is copied out. Work is split over (image, output channel) with
// at::parallel_for, so it uses torch's intra-op threads.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

namespace {

struct Geometry {
  int64_t kh, kw, sh, sw, ph, pw, dh, dw;
};

// The padded, phase-split batch: (N, C, sh * sw, Hq, Wq) floats; `tap[r]` is the offset, inside one
// channel's block, of the run that kernel tap r = i * kw + j reads.
struct Layout {
  int64_t Hq, Wq, channel, image;  // phase size, one channel's and one image's stride (in floats)
  std::vector<int64_t> tap;
};

Layout layout(int64_t C, int64_t H, int64_t W, const Geometry& g) {
  Layout l;
  l.Hq = (H + 2 * g.ph + g.sh - 1) / g.sh;
  l.Wq = (W + 2 * g.pw + g.sw - 1) / g.sw;
  l.channel = g.sh * g.sw * l.Hq * l.Wq;
  l.image = C * l.channel;
  for (int64_t i = 0; i < g.kh; ++i)
    for (int64_t j = 0; j < g.kw; ++j) {
      const int64_t row = i * g.dh, col = j * g.dw;  // where the tap reads, relative to the output's corner
      const int64_t phase = (row % g.sh) * g.sw + col % g.sw;
      l.tap.push_back(phase * l.Hq * l.Wq + (row / g.sh) * l.Wq + col / g.sw);
    }
  return l;
}

// x (N, C, H, W) into the zeroed `out` in layout `l`: padded pixel (h, w) goes to phase (h % sh, w % sw),
// position (h / sh, w / sw).
void split_phases(const float* x, int64_t N, int64_t C, int64_t H, int64_t W, const Geometry& g,
                  const Layout& l, float* out) {
  for (int64_t plane = 0; plane < N * C; ++plane) {
    float* base = out + plane * l.channel;
    for (int64_t h = 0; h < H; ++h) {
      const int64_t hp = h + g.ph;
      const float* src = x + (plane * H + h) * W;
      float* row = base + (hp % g.sh) * g.sw * l.Hq * l.Wq + (hp / g.sh) * l.Wq;
      if (g.sw == 1) {
        std::copy(src, src + W, row + g.pw);
      } else {
        for (int64_t w = 0; w < W; ++w) {
          const int64_t wp = w + g.pw;
          row[(wp % g.sw) * l.Hq * l.Wq + wp / g.sw] = src[w];
        }
      }
    }
  }
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

// One output plane (Ho, Wo) into `y`, computed in `wide` (Ho rows of the phase width Wq) from one image
// `xp` in layout `l`, with the kept weights [begin, end) of the CSR row. TAPS: kh * kw when known at
// compile time (9: decoding a column index divides by a constant, which becomes a multiplication), else 0.
template <int TAPS>
void output_plane(const float* xp, const Layout& l, int64_t taps_at_runtime, int64_t Ho, int64_t Wo,
                  const int32_t* col, const float* val, int64_t begin, int64_t end, float bias, float* wide,
                  float* y) {
  const int64_t taps = TAPS ? TAPS : taps_at_runtime;
  const int64_t len = (Ho - 1) * l.Wq + Wo;  // the rest of the last row would be cropped anyway
  std::fill(wide, wide + Ho * l.Wq, bias);
  auto source = [&](int64_t p) { return xp + (col[p] / taps) * l.channel + l.tap[col[p] % taps]; };
  int64_t p = begin;
  for (; p + 4 <= end; p += 4)
    axpy4(wide, source(p), source(p + 1), source(p + 2), source(p + 3), val[p], val[p + 1], val[p + 2],
          val[p + 3], len);
  for (; p < end; ++p) axpy(wide, source(p), val[p], len);
  for (int64_t oh = 0; oh < Ho; ++oh) std::copy(wide + oh * l.Wq, wide + oh * l.Wq + Wo, y + oh * Wo);
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
  TORCH_CHECK(crow.scalar_type() == torch::kInt && col.scalar_type() == torch::kInt &&
                  values.scalar_type() == torch::kFloat && crow.is_contiguous() && col.is_contiguous() &&
                  values.is_contiguous() && col.numel() == values.numel(),
              "sparse_conv2d: the weight must be contiguous CSR int32 indices and float32 values");
  TORCH_CHECK(!bias.has_value() || (bias->scalar_type() == torch::kFloat && bias->numel() == crow.numel() - 1),
              "sparse_conv2d: bias must be float32 with one value per output channel");
  const Geometry g{geometry[1], geometry[2], geometry[3], geometry[4],
                   geometry[5], geometry[6], geometry[7], geometry[8]};
  x = x.contiguous();
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), O = crow.numel() - 1;
  const int64_t Ho = (H + 2 * g.ph - g.dh * (g.kh - 1) - 1) / g.sh + 1;
  const int64_t Wo = (W + 2 * g.pw - g.dw * (g.kw - 1) - 1) / g.sw + 1;
  TORCH_CHECK(Ho > 0 && Wo > 0, "sparse_conv2d: input ", H, "x", W, " is smaller than the kernel");
  auto y = torch::empty({N, O, Ho, Wo}, x.options());
  const Layout l = layout(C, H, W, g);
  const float* x_p = x.data_ptr<float>();
  torch::Tensor split;  // a tensor, not a vector, so that memory measurements see it
  const bool as_is = g.ph == 0 && g.pw == 0 && g.sh == 1 && g.sw == 1;  // x already is the layout
  if (!as_is) {
    split = torch::zeros({N, l.image}, x.options());
    split_phases(x_p, N, C, H, W, g, l, split.data_ptr<float>());
    x_p = split.data_ptr<float>();
  }
  const int32_t* crow_p = crow.data_ptr<int32_t>();
  const int32_t* col_p = col.data_ptr<int32_t>();
  const float* val_p = values.data_ptr<float>();
  const float* bias_p = bias.has_value() ? bias->data_ptr<float>() : nullptr;
  float* y_p = y.data_ptr<float>();
  const int64_t taps = g.kh * g.kw;
  at::parallel_for(0, N * O, 1, [&](int64_t first, int64_t last) {
    std::vector<float> wide(Ho * l.Wq);
    for (int64_t index = first; index < last; ++index) {
      const int64_t n = index / O, o = index % O;
      const float b = bias_p ? bias_p[o] : 0.0f;
      const float* image = x_p + n * l.image;
      float* out = y_p + index * Ho * Wo;
      if (taps == 9)
        output_plane<9>(image, l, taps, Ho, Wo, col_p, val_p, crow_p[o], crow_p[o + 1], b, wide.data(), out);
      else
        output_plane<0>(image, l, taps, Ho, Wo, col_p, val_p, crow_p[o], crow_p[o + 1], b, wide.data(), out);
    }
  });
  return y;
}

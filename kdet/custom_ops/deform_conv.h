// Deformable convolution (DCNv1 and modulated DCNv2), NHWC: shared parameters and the
// bilinear-sampling rule, for the CPU kernels (deform_conv.cc) and the CUDA kernels
// (deform_conv.cu.cc).
//
// Layouts (kdet, NHWC; mmcv's channel order moved to the last axis):
//   input  [B, H, W, C]
//   offset [B, Ho, Wo, dg * kh * kw * 2]   (deform group, kernel point row-major, (dy, dx))
//   mask   [B, Ho, Wo, dg * kh * kw]       (only when use_mask)
//   weight [kh, kw, C / groups, Cout]
//   bias   [Cout]                          (only when use_bias)
//   output [B, Ho, Wo, Cout]
// The im2col buffer of one output pixel is laid out [groups][kh * kw][C / groups], so that
// the slice of one convolution group is a plain strided matrix for the GEMM with
// weight.reshape(kh * kw * C / groups, Cout)[:, group columns].
#ifndef KDET_CUSTOM_OPS_DEFORM_CONV_H_
#define KDET_CUSTOM_OPS_DEFORM_CONV_H_

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define KDET_HD __host__ __device__ __forceinline__
#else
#define KDET_HD inline
#endif

namespace kdet {

struct DeformConvParams {
  int64_t batch, height, width, channels;  // input
  int64_t out_height, out_width, out_channels;
  int64_t kernel_h, kernel_w;
  int64_t stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w;
  int64_t groups, deform_groups;
  bool use_mask, use_bias;

  KDET_HD int64_t kernel_points() const { return kernel_h * kernel_w; }
  KDET_HD int64_t rows() const { return batch * out_height * out_width; }
  KDET_HD int64_t col_width() const { return kernel_points() * channels; }
  KDET_HD int64_t group_channels() const { return channels / groups; }
  KDET_HD int64_t group_out_channels() const { return out_channels / groups; }
  KDET_HD int64_t deform_group_channels() const { return channels / deform_groups; }
  KDET_HD int64_t offset_channels() const { return deform_groups * kernel_points() * 2; }
  KDET_HD int64_t mask_channels() const { return deform_groups * kernel_points(); }
};

// Output size of a convolution with symmetric zero padding (PyTorch/mmcv rule).
KDET_HD int64_t ConvOutSize(int64_t in, int64_t kernel, int64_t stride, int64_t pad,
                            int64_t dilation) {
  return (in + 2 * pad - (dilation * (kernel - 1) + 1)) / stride + 1;
}

// Bilinear sampling of one point at (h, w) of an H x W map, mmcv's deformable_im2col rule:
// a point with h <= -1, h >= H, w <= -1 or w >= W samples 0 (all corner weights 0); otherwise
// each of the four integer corners around it contributes its bilinear weight when it lies
// inside the map, and 0 when it does not. corner i: 0 = (h_low, w_low), 1 = (h_low, w_high),
// 2 = (h_high, w_low), 3 = (h_high, w_high).
template <typename S>
struct Bilinear {
  bool inside;          // the point samples something (may still have zero corners)
  S lh, lw;             // fractional parts h - floor(h), w - floor(w)
  int64_t y[4], x[4];   // corner coordinates
  bool ok[4];           // corner inside the map
  S weight[4];          // bilinear weights, 0 for corners outside the map

  KDET_HD void Set(S h, S w, int64_t height, int64_t width) {
    inside = h > S(-1) && w > S(-1) && h < S(height) && w < S(width);
    if (!inside) {
      lh = lw = S(0);
      for (int i = 0; i < 4; ++i) {
        y[i] = x[i] = 0;
        ok[i] = false;
        weight[i] = S(0);
      }
      return;
    }
#if defined(__CUDA_ARCH__)
    const S fh = floor(h), fw = floor(w);
#else
    const S fh = std::floor(h), fw = std::floor(w);
#endif
    const int64_t h_low = static_cast<int64_t>(fh), w_low = static_cast<int64_t>(fw);
    lh = h - fh;
    lw = w - fw;
    const S hh = S(1) - lh, hw = S(1) - lw;
    y[0] = h_low;     x[0] = w_low;     weight[0] = hh * hw;
    y[1] = h_low;     x[1] = w_low + 1; weight[1] = hh * lw;
    y[2] = h_low + 1; x[2] = w_low;     weight[2] = lh * hw;
    y[3] = h_low + 1; x[3] = w_low + 1; weight[3] = lh * lw;
    for (int i = 0; i < 4; ++i) {
      ok[i] = y[i] >= 0 && y[i] < height && x[i] >= 0 && x[i] < width;
      if (!ok[i]) weight[i] = S(0);
    }
  }

  // d(sample)/dh and d(sample)/dw as linear forms in the corner values: coefficients of
  // the four corners (the derivative of the bilinear formula on the cell floor(h), floor(w)).
  KDET_HD void DerivH(S* c) const {
    const S hw = S(1) - lw;
    c[0] = -hw; c[1] = -lw; c[2] = hw; c[3] = lw;
  }
  KDET_HD void DerivW(S* c) const {
    const S hh = S(1) - lh;
    c[0] = -hh; c[1] = hh; c[2] = -lh; c[3] = lh;
  }
};

}  // namespace kdet

#endif  // KDET_CUSTOM_OPS_DEFORM_CONV_H_

// CUDA kernels of KdetDeformConv2d / KdetDeformConv2dGrad (NHWC). Compiled by nvcc when the
// installed TensorFlow is built with CUDA; the op kernels that drive these launchers (chunk
// loop, temporary buffers) are in deform_conv.cc under GOOGLE_CUDA. Same math as the CPU
// kernel (sampling rule in deform_conv.h): bilinear im2col, a GEMM, and for the gradients a
// second GEMM, col2im with atomic adds, per-sample offset/mask gradients and a third GEMM.
//
// The GEMM is a plain shared-memory tiled kernel (no cuBLAS dependency), far from cuBLAS
// speed. GPU execution is unverified (no GPU on the machines this was written on); only
// nvcc compilation is tested. On GPU the pure-TF twin (implementation="tf") is the fallback.
#if GOOGLE_CUDA
#define EIGEN_USE_GPU

#include <cstdint>

#include "deform_conv.h"
#include "deform_conv_gpu.h"
#include "tensorflow/core/util/gpu_kernel_helper.h"

namespace kdet {
namespace deform_gpu {
namespace {

constexpr int kThreads = 256;
constexpr int kTile = 16;

inline int NumBlocks(int64_t total) {
  const int64_t blocks = (total + kThreads - 1) / kThreads;
  return static_cast<int>(blocks < (1 << 20) ? (blocks > 0 ? blocks : 1) : (1 << 20));
}

inline bool Launched() { return cudaGetLastError() == cudaSuccess; }

#define KDET_GRID_LOOP(i, total)                                                      \
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;       \
       i < (total); i += static_cast<int64_t>(blockDim.x) * gridDim.x)

template <typename T>
__device__ __forceinline__ float F(T v) {
  return static_cast<float>(v);
}

// Sampling point of row r, deform group dg, kernel point k.
template <typename T>
__device__ __forceinline__ void Sample(const DeformConvParams& p, const T* offset, int64_t r,
                                       int64_t dg, int64_t k, Bilinear<float>* s) {
  const int64_t pix = p.out_height * p.out_width;
  const int64_t ho = (r % pix) / p.out_width, wo = r % p.out_width;
  const int64_t ki = k / p.kernel_w, kj = k % p.kernel_w;
  const T* o = offset + r * p.offset_channels() + (dg * p.kernel_points() + k) * 2;
  const float h = static_cast<float>(ho * p.stride_h - p.pad_h + ki * p.dilation_h) + F(o[0]);
  const float w = static_cast<float>(wo * p.stride_w - p.pad_w + kj * p.dilation_w) + F(o[1]);
  s->Set(h, w, p.height, p.width);
}

// Column index of (kernel point k, channel c) in one row of the column buffer.
__device__ __forceinline__ int64_t ColIndex(const DeformConvParams& p, int64_t k, int64_t c) {
  const int64_t cg = p.group_channels(), g = c / cg;
  return g * p.kernel_points() * cg + k * cg + (c - g * cg);
}

__global__ void FillKernel(float* dst, int64_t n, float value) {
  KDET_GRID_LOOP(i, n) { dst[i] = value; }
}

template <typename S, typename D>
__global__ void ConvertKernel(const S* src, int64_t n, D* dst) {
  KDET_GRID_LOOP(i, n) { dst[i] = static_cast<D>(static_cast<float>(src[i])); }
}

__global__ void AddBiasKernel(const float* bias, int64_t rows, int64_t channels, float* out) {
  KDET_GRID_LOOP(i, rows * channels) { out[i] += bias[i % channels]; }
}

// One thread per (row, kernel point, channel).
template <typename T>
__global__ void Im2ColKernel(DeformConvParams p, const T* input, const T* offset,
                             const T* mask, int64_t r0, int64_t n, float* col) {
  const int64_t C = p.channels, kp = p.kernel_points();
  const int64_t pix = p.out_height * p.out_width, cdg = p.deform_group_channels();
  KDET_GRID_LOOP(i, n * kp * C) {
    const int64_t c = i % C, k = (i / C) % kp, r = r0 + i / (C * kp), dg = c / cdg;
    Bilinear<float> s;
    Sample(p, offset, r, dg, k, &s);
    float v = 0.0f;
    if (s.inside) {
      const T* image = input + (r / pix) * p.height * p.width * C;
      for (int j = 0; j < 4; ++j) {
        if (s.ok[j]) v += s.weight[j] * F(image[(s.y[j] * p.width + s.x[j]) * C + c]);
      }
      if (p.use_mask) v *= F(mask[r * p.mask_channels() + dg * kp + k]);
    }
    col[(r - r0) * p.col_width() + ColIndex(p, k, c)] = v;
  }
}

// Tiled GEMM, one thread per element of C; see Gemm() in deform_conv_gpu.h.
__global__ void GemmKernel(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
                           bool trans_a, const float* b, int64_t ldb, bool trans_b, float beta,
                           float* c, int64_t ldc) {
  __shared__ float as[kTile][kTile + 1];
  __shared__ float bs[kTile][kTile + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t col = blockIdx.x * static_cast<int64_t>(kTile) + tx;
  for (int64_t tile_row = blockIdx.y; tile_row * kTile < m; tile_row += gridDim.y) {
    const int64_t row = tile_row * kTile + ty;
    float acc = 0.0f;
    for (int64_t k0 = 0; k0 < k; k0 += kTile) {
      const int64_t ka = k0 + tx, kb = k0 + ty;
      as[ty][tx] = (row < m && ka < k) ? (trans_a ? a[ka * lda + row] : a[row * lda + ka]) : 0.0f;
      bs[ty][tx] = (kb < k && col < n) ? (trans_b ? b[col * ldb + kb] : b[kb * ldb + col]) : 0.0f;
      __syncthreads();
#pragma unroll
      for (int j = 0; j < kTile; ++j) acc += as[ty][j] * bs[j][tx];
      __syncthreads();
    }
    if (row < m && col < n) {
      float* out = c + row * ldc + col;
      *out = (beta == 0.0f ? 0.0f : beta * *out) + acc;
    }
  }
}

// One thread per (row, deform group, kernel point): the derivative of the sample with respect
// to (dy, dx), dotted with the column gradient over the group's channels; the mask gradient
// is the sample (before the mask) dotted with it.
template <typename T>
__global__ void CoordGradKernel(DeformConvParams p, const T* input, const T* offset,
                                const T* mask, const float* gcol, int64_t r0, int64_t n,
                                T* grad_offset, T* grad_mask) {
  const int64_t kp = p.kernel_points(), C = p.channels, cdg = p.deform_group_channels();
  const int64_t pix = p.out_height * p.out_width;
  KDET_GRID_LOOP(i, n * p.deform_groups * kp) {
    const int64_t k = i % kp, dg = (i / kp) % p.deform_groups, r = r0 + i / (kp * p.deform_groups);
    Bilinear<float> s;
    Sample(p, offset, r, dg, k, &s);
    float G[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    if (s.inside) {
      const T* image = input + (r / pix) * p.height * p.width * C;
      const float* grow = gcol + (r - r0) * p.col_width();
      for (int64_t c = dg * cdg; c < (dg + 1) * cdg; ++c) {
        const float g = grow[ColIndex(p, k, c)];
        for (int j = 0; j < 4; ++j) {
          if (s.ok[j]) G[j] += g * F(image[(s.y[j] * p.width + s.x[j]) * C + c]);
        }
      }
    }
    float dh[4], dw[4];
    s.DerivH(dh);
    s.DerivW(dw);
    float gh = 0.0f, gw = 0.0f, gm = 0.0f;
    for (int j = 0; j < 4; ++j) {
      gh += dh[j] * G[j];
      gw += dw[j] * G[j];
      gm += s.weight[j] * G[j];
    }
    const float mk = p.use_mask ? F(mask[r * p.mask_channels() + dg * kp + k]) : 1.0f;
    T* go = grad_offset + r * p.offset_channels() + (dg * kp + k) * 2;
    go[0] = static_cast<T>(gh * mk);
    go[1] = static_cast<T>(gw * mk);
    if (p.use_mask) grad_mask[r * p.mask_channels() + dg * kp + k] = static_cast<T>(gm);
  }
}

// One thread per (row, kernel point, channel): atomic bilinear scatter.
template <typename T>
__global__ void Col2ImKernel(DeformConvParams p, const T* offset, const T* mask,
                             const float* gcol, int64_t r0, int64_t n, float* grad_input) {
  const int64_t C = p.channels, kp = p.kernel_points();
  const int64_t pix = p.out_height * p.out_width, cdg = p.deform_group_channels();
  KDET_GRID_LOOP(i, n * kp * C) {
    const int64_t c = i % C, k = (i / C) % kp, r = r0 + i / (C * kp), dg = c / cdg;
    Bilinear<float> s;
    Sample(p, offset, r, dg, k, &s);
    if (!s.inside) continue;
    float g = gcol[(r - r0) * p.col_width() + ColIndex(p, k, c)];
    if (p.use_mask) g *= F(mask[r * p.mask_channels() + dg * kp + k]);
    float* image = grad_input + (r / pix) * p.height * p.width * C;
    for (int j = 0; j < 4; ++j) {
      if (s.ok[j]) atomicAdd(image + (s.y[j] * p.width + s.x[j]) * C + c, s.weight[j] * g);
    }
  }
}

// One thread per channel, summing the chunk's rows.
__global__ void BiasGradKernel(const float* grad_output, int64_t r0, int64_t n,
                               int64_t channels, float* grad_bias) {
  KDET_GRID_LOOP(c, channels) {
    float acc = 0.0f;
    for (int64_t r = r0; r < r0 + n; ++r) acc += grad_output[r * channels + c];
    grad_bias[c] += acc;
  }
}

}  // namespace

bool Fill(const Device& d, float* dst, int64_t n, float value) {
  if (n == 0) return true;
  FillKernel<<<NumBlocks(n), kThreads, 0, d.stream()>>>(dst, n, value);
  return Launched();
}

template <typename T>
bool ToFloat(const Device& d, const T* src, int64_t n, float* dst) {
  if (n == 0) return true;
  ConvertKernel<T, float><<<NumBlocks(n), kThreads, 0, d.stream()>>>(src, n, dst);
  return Launched();
}

template <typename T>
bool FromFloat(const Device& d, const float* src, int64_t n, T* dst) {
  if (n == 0) return true;
  ConvertKernel<float, T><<<NumBlocks(n), kThreads, 0, d.stream()>>>(src, n, dst);
  return Launched();
}

bool AddBias(const Device& d, const float* bias, int64_t rows, int64_t channels, float* out) {
  if (rows * channels == 0) return true;
  AddBiasKernel<<<NumBlocks(rows * channels), kThreads, 0, d.stream()>>>(bias, rows, channels,
                                                                         out);
  return Launched();
}

template <typename T>
bool Im2Col(const Device& d, const DeformConvParams& p, const T* input, const T* offset,
            const T* mask, int64_t r0, int64_t n, float* col) {
  const int64_t total = n * p.col_width();
  if (total == 0) return true;
  Im2ColKernel<T><<<NumBlocks(total), kThreads, 0, d.stream()>>>(p, input, offset, mask, r0, n,
                                                                 col);
  return Launched();
}

bool Gemm(const Device& d, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
          bool trans_a, const float* b, int64_t ldb, bool trans_b, float beta, float* c,
          int64_t ldc) {
  if (m == 0 || n == 0) return true;
  const int64_t grid_x = (n + kTile - 1) / kTile, grid_y = (m + kTile - 1) / kTile;
  if (grid_x > 2147483647LL) return false;
  const dim3 grid(static_cast<unsigned>(grid_x),
                  static_cast<unsigned>(grid_y < 65535 ? grid_y : 65535));
  GemmKernel<<<grid, dim3(kTile, kTile), 0, d.stream()>>>(m, n, k, a, lda, trans_a, b, ldb,
                                                          trans_b, beta, c, ldc);
  return Launched();
}

template <typename T>
bool CoordGrad(const Device& d, const DeformConvParams& p, const T* input, const T* offset,
               const T* mask, const float* gcol, int64_t r0, int64_t n, T* grad_offset,
               T* grad_mask) {
  const int64_t total = n * p.deform_groups * p.kernel_points();
  if (total == 0) return true;
  CoordGradKernel<T><<<NumBlocks(total), kThreads, 0, d.stream()>>>(
      p, input, offset, mask, gcol, r0, n, grad_offset, grad_mask);
  return Launched();
}

template <typename T>
bool Col2Im(const Device& d, const DeformConvParams& p, const T* offset, const T* mask,
            const float* gcol, int64_t r0, int64_t n, float* grad_input) {
  const int64_t total = n * p.col_width();
  if (total == 0) return true;
  Col2ImKernel<T><<<NumBlocks(total), kThreads, 0, d.stream()>>>(p, offset, mask, gcol, r0, n,
                                                                 grad_input);
  return Launched();
}

bool BiasGrad(const Device& d, const float* grad_output, int64_t r0, int64_t n,
              int64_t channels, float* grad_bias) {
  if (channels == 0 || n == 0) return true;
  BiasGradKernel<<<NumBlocks(channels), kThreads, 0, d.stream()>>>(grad_output, r0, n,
                                                                   channels, grad_bias);
  return Launched();
}

#define KDET_INSTANTIATE_DEFORM_GPU(T)                                                         \
  template bool ToFloat<T>(const Device&, const T*, int64_t, float*);                          \
  template bool FromFloat<T>(const Device&, const float*, int64_t, T*);                        \
  template bool Im2Col<T>(const Device&, const DeformConvParams&, const T*, const T*,          \
                          const T*, int64_t, int64_t, float*);                                 \
  template bool CoordGrad<T>(const Device&, const DeformConvParams&, const T*, const T*,       \
                             const T*, const float*, int64_t, int64_t, T*, T*);                \
  template bool Col2Im<T>(const Device&, const DeformConvParams&, const T*, const T*,          \
                          const float*, int64_t, int64_t, float*);

KDET_INSTANTIATE_DEFORM_GPU(float)
KDET_INSTANTIATE_DEFORM_GPU(Eigen::half)
KDET_INSTANTIATE_DEFORM_GPU(Eigen::bfloat16)

}  // namespace deform_gpu
}  // namespace kdet

#endif  // GOOGLE_CUDA

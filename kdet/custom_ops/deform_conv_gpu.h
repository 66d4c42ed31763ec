// Launchers of the deformable-convolution CUDA kernels (deform_conv.cu.cc), called by the
// GPU op kernels in deform_conv.cc. Only compiled when GOOGLE_CUDA is defined.
//
// T is the tensor type (float, Eigen::half, Eigen::bfloat16); columns, GEMMs and gradient
// accumulators are float32. All pointers are device pointers; every launcher returns false
// on a launch error. Rows are flattened output pixels (b, ho, wo); a "chunk" is rows
// [r0, r0 + n) and its column buffer is [n, kh*kw*C] in the layout of deform_conv.h.
#ifndef KDET_CUSTOM_OPS_DEFORM_CONV_GPU_H_
#define KDET_CUSTOM_OPS_DEFORM_CONV_GPU_H_

#if GOOGLE_CUDA
#ifndef EIGEN_USE_GPU
#define EIGEN_USE_GPU
#endif
#include <cstdint>

#include "deform_conv.h"
#include "unsupported/Eigen/CXX11/Tensor"

namespace kdet {
namespace deform_gpu {

using Device = Eigen::GpuDevice;

// dst[i] = value for i < n.
bool Fill(const Device& d, float* dst, int64_t n, float value);
// dst[i] = float(src[i]) / dst[i] = T(src[i]).
template <typename T>
bool ToFloat(const Device& d, const T* src, int64_t n, float* dst);
template <typename T>
bool FromFloat(const Device& d, const float* src, int64_t n, T* dst);
// out[r, c] += bias[c] for rows r < rows.
bool AddBias(const Device& d, const float* bias, int64_t rows, int64_t channels, float* out);

// Bilinear im2col of a chunk: col [n, col_width].
template <typename T>
bool Im2Col(const Device& d, const DeformConvParams& p, const T* input, const T* offset,
            const T* mask, int64_t r0, int64_t n, float* col);

// Row-major GEMM: C = beta * C + op(A) x op(B), op(A) [m, k], op(B) [k, n]; element (i, j)
// of A is a[i * lda + j], or a[j * lda + i] when trans_a (same for B); C(i, j) = c[i * ldc + j].
bool Gemm(const Device& d, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
          bool trans_a, const float* b, int64_t ldb, bool trans_b, float beta, float* c,
          int64_t ldc);

// Offset and mask gradients of a chunk from its column gradients gcol [n, col_width].
template <typename T>
bool CoordGrad(const Device& d, const DeformConvParams& p, const T* input, const T* offset,
               const T* mask, const float* gcol, int64_t r0, int64_t n, T* grad_offset,
               T* grad_mask);

// col2im of a chunk: grad_input [B, H, W, C] (float32) += scattered column gradients.
template <typename T>
bool Col2Im(const Device& d, const DeformConvParams& p, const T* offset, const T* mask,
            const float* gcol, int64_t r0, int64_t n, float* grad_input);

// grad_bias[c] += sum over rows [r0, r0 + n) of grad_output[r, c].
bool BiasGrad(const Device& d, const float* grad_output, int64_t r0, int64_t n,
              int64_t channels, float* grad_bias);

}  // namespace deform_gpu
}  // namespace kdet

#endif  // GOOGLE_CUDA
#endif  // KDET_CUSTOM_OPS_DEFORM_CONV_GPU_H_

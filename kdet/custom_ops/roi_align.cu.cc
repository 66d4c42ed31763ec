// CUDA kernels of KdetRoiAlign / KdetRoiAlignGrad (NHWC, float32). Compiled by nvcc when the
// installed TensorFlow is built with CUDA; the op kernels that call these launchers are in
// roi_align.cc (under GOOGLE_CUDA). Same math as the CPU kernel: roi_align.h.
//
// One thread per output element (k, y, x, c): channels are innermost in NHWC, so neighbouring
// threads read neighbouring floats. The backward pass scatters with atomic adds.
//
// GPU execution is unverified (no GPU on the machines this was written on); only nvcc
// compilation is tested. On GPU the pure-TF twin is the fallback (implementation="tf").
#if GOOGLE_CUDA
#define EIGEN_USE_GPU

#include <cstdint>

#include "roi_align.h"
#include "roi_align_gpu.h"
#include "tensorflow/core/util/gpu_kernel_helper.h"

namespace kdet {
namespace roi_align {
namespace {

constexpr int kThreads = 256;

inline int NumBlocks(int64_t total) {
  const int64_t blocks = (total + kThreads - 1) / kThreads;
  return static_cast<int>(blocks < (1 << 20) ? blocks : (1 << 20));  // grid-stride beyond this
}

// A RoI row is usable when finite with an integral batch index in [0, batch); on GPU the
// rows are not checked on the host (that would cost a device->host copy), so unusable rows
// give zeros (forward) and no gradient.
__device__ inline bool ValidRoi(const float* roi, int batch) {
  for (int j = 0; j < 5; ++j) {
    if (!isfinite(roi[j])) return false;
  }
  return roi[0] >= 0.0f && roi[0] < static_cast<float>(batch) && roi[0] == floorf(roi[0]);
}

__global__ void ForwardKernel(int64_t total, const float* __restrict__ features,
                              const float* __restrict__ rois, int batch, int height, int width,
                              int channels, int pooled_h, int pooled_w, float spatial_scale,
                              int sampling_ratio, bool aligned, float* __restrict__ output) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int c = static_cast<int>(i % channels);
    const int px = static_cast<int>((i / channels) % pooled_w);
    const int py = static_cast<int>((i / channels / pooled_w) % pooled_h);
    const int64_t k = i / channels / pooled_w / pooled_h;
    const float* roi = rois + 5 * k;
    if (!ValidRoi(roi, batch)) {
      output[i] = 0.0f;
      continue;
    }
    const RoiParams p = MakeRoiParams(roi, pooled_h, pooled_w, spatial_scale, sampling_ratio,
                                      aligned);
    const float* img = features + static_cast<int64_t>(p.batch) * height * width * channels;
    float acc = 0.0f;
    for (int iy = 0; iy < p.grid_h; ++iy) {
      int y0, y1;
      float wy0, wy1;
      if (!AxisWeights(SampleCoord(p.start_h, p.bin_h, py, iy, p.grid_h), height, &y0, &y1,
                       &wy0, &wy1)) {
        continue;
      }
      for (int ix = 0; ix < p.grid_w; ++ix) {
        int x0, x1;
        float wx0, wx1;
        if (!AxisWeights(SampleCoord(p.start_w, p.bin_w, px, ix, p.grid_w), width, &x0, &x1,
                         &wx0, &wx1)) {
          continue;
        }
        const int64_t r0 = static_cast<int64_t>(y0) * width, r1 = static_cast<int64_t>(y1) * width;
        acc += wy0 * wx0 * img[(r0 + x0) * channels + c] + wy0 * wx1 * img[(r0 + x1) * channels + c] +
               wy1 * wx0 * img[(r1 + x0) * channels + c] + wy1 * wx1 * img[(r1 + x1) * channels + c];
      }
    }
    output[i] = acc / p.count;
  }
}

__global__ void BackwardKernel(int64_t total, const float* __restrict__ grad,
                               const float* __restrict__ rois, int batch, int height, int width,
                               int channels, int pooled_h, int pooled_w, float spatial_scale,
                               int sampling_ratio, bool aligned, float* grad_features) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int c = static_cast<int>(i % channels);
    const int px = static_cast<int>((i / channels) % pooled_w);
    const int py = static_cast<int>((i / channels / pooled_w) % pooled_h);
    const int64_t k = i / channels / pooled_w / pooled_h;
    const float* roi = rois + 5 * k;
    if (!ValidRoi(roi, batch)) continue;
    const RoiParams p = MakeRoiParams(roi, pooled_h, pooled_w, spatial_scale, sampling_ratio,
                                      aligned);
    float* img = grad_features + static_cast<int64_t>(p.batch) * height * width * channels;
    const float g = grad[i] / p.count;
    for (int iy = 0; iy < p.grid_h; ++iy) {
      int y0, y1;
      float wy0, wy1;
      if (!AxisWeights(SampleCoord(p.start_h, p.bin_h, py, iy, p.grid_h), height, &y0, &y1,
                       &wy0, &wy1)) {
        continue;
      }
      for (int ix = 0; ix < p.grid_w; ++ix) {
        int x0, x1;
        float wx0, wx1;
        if (!AxisWeights(SampleCoord(p.start_w, p.bin_w, px, ix, p.grid_w), width, &x0, &x1,
                         &wx0, &wx1)) {
          continue;
        }
        const int64_t r0 = static_cast<int64_t>(y0) * width, r1 = static_cast<int64_t>(y1) * width;
        tensorflow::GpuAtomicAdd(img + (r0 + x0) * channels + c, g * wy0 * wx0);
        tensorflow::GpuAtomicAdd(img + (r0 + x1) * channels + c, g * wy0 * wx1);
        tensorflow::GpuAtomicAdd(img + (r1 + x0) * channels + c, g * wy1 * wx0);
        tensorflow::GpuAtomicAdd(img + (r1 + x1) * channels + c, g * wy1 * wx1);
      }
    }
  }
}

}  // namespace

bool LaunchForwardGpu(const Eigen::GpuDevice& d, const GpuArgs& a, const float* features,
                      const float* rois, float* output) {
  const int64_t total = a.num_rois * a.pooled_h * a.pooled_w * a.channels;
  if (total == 0) return true;
  ForwardKernel<<<NumBlocks(total), kThreads, 0, d.stream()>>>(
      total, features, rois, a.batch, a.height, a.width, a.channels, a.pooled_h, a.pooled_w,
      a.spatial_scale, a.sampling_ratio, a.aligned, output);
  return cudaGetLastError() == cudaSuccess;
}

bool LaunchBackwardGpu(const Eigen::GpuDevice& d, const GpuArgs& a, const float* grad,
                       const float* rois, float* grad_features) {
  const int64_t feature_size = static_cast<int64_t>(a.batch) * a.height * a.width * a.channels;
  if (feature_size > 0 &&
      cudaMemsetAsync(grad_features, 0, sizeof(float) * feature_size, d.stream()) != cudaSuccess) {
    return false;
  }
  const int64_t total = a.num_rois * a.pooled_h * a.pooled_w * a.channels;
  if (total == 0) return true;
  BackwardKernel<<<NumBlocks(total), kThreads, 0, d.stream()>>>(
      total, grad, rois, a.batch, a.height, a.width, a.channels, a.pooled_h, a.pooled_w,
      a.spatial_scale, a.sampling_ratio, a.aligned, grad_features);
  return cudaGetLastError() == cudaSuccess;
}

}  // namespace roi_align
}  // namespace kdet

#endif  // GOOGLE_CUDA

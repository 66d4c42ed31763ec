// Launchers of the RoIAlign CUDA kernels (roi_align.cu.cc), called by the GPU op kernels in
// roi_align.cc. Only compiled when GOOGLE_CUDA is defined (CUDA builds of TensorFlow).
#ifndef KDET_CUSTOM_OPS_ROI_ALIGN_GPU_H_
#define KDET_CUSTOM_OPS_ROI_ALIGN_GPU_H_

#if GOOGLE_CUDA
#ifndef EIGEN_USE_GPU
#define EIGEN_USE_GPU
#endif
#include <cstdint>

#include "unsupported/Eigen/CXX11/Tensor"

namespace kdet {
namespace roi_align {

struct GpuArgs {
  int64_t num_rois;
  int batch, height, width, channels;
  int pooled_h, pooled_w;
  float spatial_scale;
  int sampling_ratio;
  bool aligned;
};

// features [B,H,W,C], rois [K,5] -> output [K,ph,pw,C]; all device pointers. False on a
// launch error.
bool LaunchForwardGpu(const Eigen::GpuDevice& d, const GpuArgs& a, const float* features,
                      const float* rois, float* output);
// grad [K,ph,pw,C] -> grad_features [B,H,W,C] (zeroed here, then accumulated atomically).
bool LaunchBackwardGpu(const Eigen::GpuDevice& d, const GpuArgs& a, const float* grad,
                       const float* rois, float* grad_features);

}  // namespace roi_align
}  // namespace kdet

#endif  // GOOGLE_CUDA
#endif  // KDET_CUSTOM_OPS_ROI_ALIGN_GPU_H_

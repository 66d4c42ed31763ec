// RoIAlign (average pooling) math shared by the CPU kernel (roi_align.cc) and the CUDA kernel
// (roi_align.cu.cc). Semantics are mmcv's roi_align (mmcv/ops/csrc/common/*roi_align*):
//
//   offset      = aligned ? 0.5 : 0
//   start_{x,y} = roi_{x1,y1} * spatial_scale - offset
//   size_{x,y}  = (roi_{x2,y2} - roi_{x1,y1}) * spatial_scale      (end - start)
//                 aligned = false: size clamped to >= 1 (legacy Detectron behaviour)
//   bin         = size / pooled
//   grid        = sampling_ratio > 0 ? sampling_ratio : ceil(size / pooled)  (per axis)
//   sample iy   = start + p * bin + (iy + 0.5) * bin / grid,  iy in [0, grid)
//   output      = sum of bilinear samples / max(grid_h * grid_w, 1)
//
// Bilinear rules (per axis, so a sample's weight factorises into y and x parts): a sample
// with y < -1 or y > height contributes 0; otherwise y is clamped at 0, and when
// floor(y) >= height - 1 both neighbours are height - 1.
#ifndef KDET_CUSTOM_OPS_ROI_ALIGN_H_
#define KDET_CUSTOM_OPS_ROI_ALIGN_H_

#include <cmath>

#if defined(__CUDACC__)
#define KDET_HOST_DEVICE __host__ __device__
#else
#define KDET_HOST_DEVICE
#endif

namespace kdet {
namespace roi_align {

struct RoiParams {
  int batch;        // image index
  float start_h;    // first sample row origin, in feature pixels
  float start_w;
  float bin_h;      // bin size in feature pixels
  float bin_w;
  int grid_h;       // samples per bin along y (may be <= 0: no samples, output 0)
  int grid_w;
  float count;      // divisor: max(grid_h * grid_w, 1)
};

// roi points at the 5 values (batch_index, x1, y1, x2, y2) in input-image pixels.
KDET_HOST_DEVICE inline RoiParams MakeRoiParams(const float* roi, int pooled_h, int pooled_w,
                                                float spatial_scale, int sampling_ratio,
                                                bool aligned) {
  RoiParams p;
  p.batch = static_cast<int>(roi[0]);
  const float offset = aligned ? 0.5f : 0.0f;
  p.start_w = roi[1] * spatial_scale - offset;
  p.start_h = roi[2] * spatial_scale - offset;
  const float end_w = roi[3] * spatial_scale - offset;
  const float end_h = roi[4] * spatial_scale - offset;
  float roi_w = end_w - p.start_w;
  float roi_h = end_h - p.start_h;
  if (!aligned) {  // mmcv: "for backward-compatibility only"
    roi_w = roi_w > 1.0f ? roi_w : 1.0f;
    roi_h = roi_h > 1.0f ? roi_h : 1.0f;
  }
  p.bin_h = roi_h / static_cast<float>(pooled_h);
  p.bin_w = roi_w / static_cast<float>(pooled_w);
  p.grid_h = sampling_ratio > 0 ? sampling_ratio
                                : static_cast<int>(ceilf(roi_h / static_cast<float>(pooled_h)));
  p.grid_w = sampling_ratio > 0 ? sampling_ratio
                                : static_cast<int>(ceilf(roi_w / static_cast<float>(pooled_w)));
  const int n = p.grid_h * p.grid_w;
  p.count = static_cast<float>(n > 1 ? n : 1);
  return p;
}

// Sample coordinate of sample `i` of bin `bin_index` along one axis.
KDET_HOST_DEVICE inline float SampleCoord(float start, float bin, int bin_index, int i, int grid) {
  return start + static_cast<float>(bin_index) * bin +
         static_cast<float>(i + 0.5f) * bin / static_cast<float>(grid);
}

// One axis of a bilinear sample: the two neighbour indices and their weights.
// Returns false when the sample lies outside [-1, size] and contributes nothing.
KDET_HOST_DEVICE inline bool AxisWeights(float v, int size, int* low, int* high, float* w_low,
                                         float* w_high) {
  if (v < -1.0f || v > static_cast<float>(size)) return false;
  if (v <= 0.0f) v = 0.0f;
  int lo = static_cast<int>(v);
  int hi;
  if (lo >= size - 1) {
    hi = lo = size - 1;
    v = static_cast<float>(lo);
  } else {
    hi = lo + 1;
  }
  const float l = v - static_cast<float>(lo);
  *low = lo;
  *high = hi;
  *w_low = 1.0f - l;
  *w_high = l;
  return true;
}

}  // namespace roi_align
}  // namespace kdet

#endif  // KDET_CUSTOM_OPS_ROI_ALIGN_H_

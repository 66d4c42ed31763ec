// RoIAlign forward/backward TensorFlow ops (NHWC) with CPU kernels; CUDA kernels live in
// roi_align.cu.cc and are registered here when built with -DGOOGLE_CUDA=1.
//
//   KdetRoiAlign(features [B,H,W,C], rois [K,5]) -> [K, pooled_h, pooled_w, C]
//   KdetRoiAlignGrad(grad [K,ph,pw,C], rois [K,5], features_shape [4]) -> [B,H,W,C]
//
// rois rows are (batch_index, x1, y1, x2, y2) in input-image pixels; the math is in
// roi_align.h (mmcv semantics, average pooling, float32).
#if GOOGLE_CUDA
#define EIGEN_USE_GPU
#endif
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "roi_align.h"
#include "roi_align_gpu.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/util/work_sharder.h"

namespace kdet {

using ::tensorflow::DEVICE_CPU;
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Status;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;
using ::tensorflow::errors::InvalidArgument;
using ::tensorflow::shape_inference::DimensionHandle;
using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;
using roi_align::AxisWeights;
using roi_align::MakeRoiParams;
using roi_align::RoiParams;
using roi_align::SampleCoord;

REGISTER_OP("KdetRoiAlign")
    .Input("features: T")
    .Input("rois: T")
    .Output("output: T")
    .Attr("T: {float}")
    .Attr("pooled_height: int >= 1")
    .Attr("pooled_width: int >= 1")
    .Attr("spatial_scale: float")
    .Attr("sampling_ratio: int >= 0")
    .Attr("aligned: bool")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle features, rois;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &features));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 2, &rois));
      DimensionHandle unused;
      TF_RETURN_IF_ERROR(c->WithValue(c->Dim(rois, 1), 5, &unused));
      int ph, pw;
      TF_RETURN_IF_ERROR(c->GetAttr("pooled_height", &ph));
      TF_RETURN_IF_ERROR(c->GetAttr("pooled_width", &pw));
      c->set_output(0, c->MakeShape({c->Dim(rois, 0), ph, pw, c->Dim(features, 3)}));
      return Status();
    })
    .Doc("RoIAlign with average pooling, mmcv semantics, NHWC features.");

REGISTER_OP("KdetRoiAlignGrad")
    .Input("grad: T")
    .Input("rois: T")
    .Input("features_shape: int32")
    .Output("grad_features: T")
    .Attr("T: {float}")
    .Attr("pooled_height: int >= 1")
    .Attr("pooled_width: int >= 1")
    .Attr("spatial_scale: float")
    .Attr("sampling_ratio: int >= 0")
    .Attr("aligned: bool")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle out;
      TF_RETURN_IF_ERROR(c->MakeShapeFromShapeTensor(2, &out));
      TF_RETURN_IF_ERROR(c->WithRank(out, 4, &out));
      c->set_output(0, out);
      return Status();
    })
    .Doc("Gradient of KdetRoiAlign with respect to the features.");

struct RoiAlignAttrs {
  int pooled_h, pooled_w, sampling_ratio;
  float spatial_scale;
  bool aligned;

  explicit RoiAlignAttrs(OpKernelConstruction* ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("pooled_height", &pooled_h));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("pooled_width", &pooled_w));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("spatial_scale", &spatial_scale));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("sampling_ratio", &sampling_ratio));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("aligned", &aligned));
    OP_REQUIRES(ctx, std::isfinite(spatial_scale) && spatial_scale > 0.0f,
                InvalidArgument("RoIAlign: spatial_scale must be finite and > 0, got ",
                                spatial_scale));
  }
};

Status CheckRoisShape(const Tensor& rois) {
  if (rois.dims() != 2 || rois.dim_size(1) != 5) {
    return InvalidArgument(
        "RoIAlign: rois must have shape [K, 5] (batch_index, x1, y1, x2, y2), got ",
        rois.shape().DebugString());
  }
  return Status();
}

// Shapes of a forward call; sets B, H, W, C, K.
Status CheckForwardShapes(const Tensor& features, const Tensor& rois, int64_t* dims) {
  if (features.dims() != 4) {
    return InvalidArgument("RoIAlign: features must be 4-D [B, H, W, C], got ",
                           features.shape().DebugString());
  }
  TF_RETURN_IF_ERROR(CheckRoisShape(rois));
  for (int i = 0; i < 4; ++i) dims[i] = features.dim_size(i);
  dims[4] = rois.dim_size(0);
  if (dims[4] > 0 && dims[3] > 0 && (dims[1] == 0 || dims[2] == 0)) {
    return InvalidArgument("RoIAlign: features have an empty spatial size ",
                           features.shape().DebugString());
  }
  return Status();
}

// Shapes of a backward call; sets B, H, W, C, K from features_shape and rois.
Status CheckBackwardShapes(const Tensor& grad, const Tensor& rois, const Tensor& shape_t,
                           int pooled_h, int pooled_w, int64_t* dims) {
  TF_RETURN_IF_ERROR(CheckRoisShape(rois));
  if (shape_t.dims() != 1 || shape_t.NumElements() != 4) {
    return InvalidArgument("RoIAlignGrad: features_shape must have 4 elements, got ",
                           shape_t.shape().DebugString());
  }
  auto s = shape_t.vec<int32_t>();
  for (int i = 0; i < 4; ++i) {
    if (s(i) < 0) return InvalidArgument("RoIAlignGrad: negative features_shape");
    dims[i] = s(i);
  }
  dims[4] = rois.dim_size(0);
  if (grad.dims() != 4 || grad.dim_size(0) != dims[4] || grad.dim_size(1) != pooled_h ||
      grad.dim_size(2) != pooled_w || grad.dim_size(3) != dims[3]) {
    return InvalidArgument("RoIAlignGrad: grad must have shape [", dims[4], ", ", pooled_h, ", ",
                           pooled_w, ", ", dims[3], "], got ", grad.shape().DebugString());
  }
  if (dims[4] > 0 && dims[3] > 0 && (dims[1] == 0 || dims[2] == 0)) {
    return InvalidArgument("RoIAlignGrad: empty spatial size");
  }
  return Status();
}

// Host-side validation of every RoI row (CPU kernels only: on GPU the rois stay on device).
Status CheckRoisValues(const float* rois, int64_t num_rois, int64_t batch) {
  for (int64_t k = 0; k < num_rois; ++k) {
    const float* r = rois + 5 * k;
    for (int j = 0; j < 5; ++j) {
      if (!std::isfinite(r[j])) {
        return InvalidArgument("RoIAlign: rois[", k, "] has a non-finite value (", r[0], ", ",
                               r[1], ", ", r[2], ", ", r[3], ", ", r[4], ")");
      }
    }
    if (r[0] < 0.0f || r[0] >= static_cast<float>(batch) || r[0] != std::floor(r[0])) {
      return InvalidArgument("RoIAlign: rois[", k, "] batch index ", r[0],
                             " is not an integer in [0, ", batch, ")");
    }
  }
  return Status();
}

// Per RoI and output bin: the samples along one axis, as (low, high, w_low, w_high) lists.
struct AxisSamples {
  std::vector<int> low, high;
  std::vector<float> w_low, w_high;

  // Fills the valid samples of bin `p` (out-of-range samples are dropped: they add 0).
  void Fill(float start, float bin, int p, int grid, int size) {
    low.clear(); high.clear(); w_low.clear(); w_high.clear();
    for (int i = 0; i < grid; ++i) {
      int lo, hi;
      float wl, wh;
      if (AxisWeights(SampleCoord(start, bin, p, i, grid), size, &lo, &hi, &wl, &wh)) {
        low.push_back(lo); high.push_back(hi); w_low.push_back(wl); w_high.push_back(wh);
      }
    }
  }
  size_t size() const { return low.size(); }
};

// y[c] += a * x[c]; x and y never overlap (x is the incoming gradient tensor).
inline void Axpy(float a, const float* __restrict__ x, float* __restrict__ y, int64_t n) {
  for (int64_t c = 0; c < n; ++c) y[c] += a * x[c];
}

// v_i[c] += w_i * g[c] for four distinct corners (the caller checks they differ).
inline void ScatterCorners(const float* __restrict__ g, float w1, float* __restrict__ v1,
                           float w2, float* __restrict__ v2, float w3, float* __restrict__ v3,
                           float w4, float* __restrict__ v4, int64_t n) {
  for (int64_t c = 0; c < n; ++c) {
    const float gc = g[c];
    v1[c] += w1 * gc;
    v2[c] += w2 * gc;
    v3[c] += w3 * gc;
    v4[c] += w4 * gc;
  }
}

// out[c] += w1 v1[c] + w2 v2[c] + w3 v3[c] + w4 v4[c]; out is the output tensor, never a v.
inline void BilinearAccumulate(float w1, const float* __restrict__ v1, float w2,
                               const float* __restrict__ v2, float w3,
                               const float* __restrict__ v3, float w4,
                               const float* __restrict__ v4, float* __restrict__ out,
                               int64_t n) {
  for (int64_t c = 0; c < n; ++c) out[c] += w1 * v1[c] + w2 * v2[c] + w3 * v3[c] + w4 * v4[c];
}

class RoiAlignOp : public OpKernel {
 public:
  explicit RoiAlignOp(OpKernelConstruction* ctx) : OpKernel(ctx), attrs_(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& features = ctx->input(0);
    const Tensor& rois = ctx->input(1);
    int64_t dims[5];
    OP_REQUIRES_OK(ctx, CheckForwardShapes(features, rois, dims));
    const int64_t B = dims[0], H = dims[1], W = dims[2], C = dims[3], K = dims[4];
    const int ph = attrs_.pooled_h, pw = attrs_.pooled_w;
    Tensor* output = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({K, ph, pw, C}), &output));
    if (K == 0 || C == 0) return;
    const float* roi_data = rois.flat<float>().data();
    OP_REQUIRES_OK(ctx, CheckRoisValues(roi_data, K, B));

    const float* fdata = features.flat<float>().data();
    float* odata = output->flat<float>().data();
    const RoiAlignAttrs a = attrs_;
    // One work unit = one output bin (k, y, x), all C channels (contiguous in NHWC).
    auto work = [&](int64_t begin, int64_t end) {
      AxisSamples ys, xs;
      for (int64_t u = begin; u < end; ++u) {
        const int64_t k = u / (ph * pw);
        const int py = static_cast<int>((u / pw) % ph);
        const int px = static_cast<int>(u % pw);
        const RoiParams p = MakeRoiParams(roi_data + 5 * k, ph, pw, a.spatial_scale,
                                          a.sampling_ratio, a.aligned);
        float* out = odata + u * C;
        std::fill(out, out + C, 0.0f);
        ys.Fill(p.start_h, p.bin_h, py, p.grid_h, static_cast<int>(H));
        xs.Fill(p.start_w, p.bin_w, px, p.grid_w, static_cast<int>(W));
        const float* img = fdata + p.batch * H * W * C;
        for (size_t i = 0; i < ys.size(); ++i) {
          const float* row_lo = img + ys.low[i] * W * C;
          const float* row_hi = img + ys.high[i] * W * C;
          for (size_t j = 0; j < xs.size(); ++j) {
            const float w1 = ys.w_low[i] * xs.w_low[j], w2 = ys.w_low[i] * xs.w_high[j];
            const float w3 = ys.w_high[i] * xs.w_low[j], w4 = ys.w_high[i] * xs.w_high[j];
            const float* v1 = row_lo + xs.low[j] * C;
            const float* v2 = row_lo + xs.high[j] * C;
            const float* v3 = row_hi + xs.low[j] * C;
            const float* v4 = row_hi + xs.high[j] * C;
            BilinearAccumulate(w1, v1, w2, v2, w3, v3, w4, v4, out, C);
          }
        }
        const float inv = 1.0f / p.count;
        for (int64_t c = 0; c < C; ++c) out[c] *= inv;
      }
    };
    const auto* threads = ctx->device()->tensorflow_cpu_worker_threads();
    // Cost of a unit: about 4 samples x 4 corners x C multiply-adds (sampling_ratio 2).
    tensorflow::Shard(threads->num_threads, threads->workers, K * ph * pw, 40 * C, work);
  }

 private:
  RoiAlignAttrs attrs_;
};

class RoiAlignGradOp : public OpKernel {
 public:
  explicit RoiAlignGradOp(OpKernelConstruction* ctx) : OpKernel(ctx), attrs_(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& grad = ctx->input(0);
    const Tensor& rois = ctx->input(1);
    int64_t dims[5];
    OP_REQUIRES_OK(ctx, CheckBackwardShapes(grad, rois, ctx->input(2), attrs_.pooled_h,
                                            attrs_.pooled_w, dims));
    const int64_t B = dims[0], H = dims[1], W = dims[2], C = dims[3], K = dims[4];
    const int ph = attrs_.pooled_h, pw = attrs_.pooled_w;
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({B, H, W, C}), &out));
    float* gdata = out->flat<float>().data();
    std::memset(gdata, 0, sizeof(float) * out->NumElements());
    if (K == 0 || C == 0) return;
    const float* roi_data = rois.flat<float>().data();
    OP_REQUIRES_OK(ctx, CheckRoisValues(roi_data, K, B));
    const float* top = grad.flat<float>().data();

    // RoIs of each image; work unit = (image, block of channels): units never write the
    // same feature element, so no atomics are needed.
    std::vector<std::vector<int64_t>> by_image(B);
    for (int64_t k = 0; k < K; ++k) by_image[static_cast<int64_t>(roi_data[5 * k])].push_back(k);
    const auto* threads = ctx->device()->tensorflow_cpu_worker_threads();
    // Wide channel blocks (>= 16, about 2 per thread): the sample geometry is recomputed per
    // block, and the inner channel loop vectorises better on long runs.
    const int64_t per_thread = (C + 2 * threads->num_threads - 1) / (2 * threads->num_threads);
    const int64_t block = std::min<int64_t>(C, std::max<int64_t>(16, (per_thread + 15) / 16 * 16));
    const int64_t blocks = (C + block - 1) / block;
    const RoiAlignAttrs a = attrs_;
    auto work = [&](int64_t begin, int64_t end) {
      AxisSamples ys, xs;
      for (int64_t u = begin; u < end; ++u) {
        const int64_t b = u / blocks;
        const int64_t c0 = (u % blocks) * block, c1 = std::min(C, c0 + block);
        float* img = gdata + b * H * W * C;
        for (int64_t k : by_image[b]) {
          const RoiParams p = MakeRoiParams(roi_data + 5 * k, ph, pw, a.spatial_scale,
                                            a.sampling_ratio, a.aligned);
          const float inv = 1.0f / p.count;
          for (int py = 0; py < ph; ++py) {
            ys.Fill(p.start_h, p.bin_h, py, p.grid_h, static_cast<int>(H));
            if (ys.size() == 0) continue;
            for (int px = 0; px < pw; ++px) {
              xs.Fill(p.start_w, p.bin_w, px, p.grid_w, static_cast<int>(W));
              const float* g = top + ((k * ph + py) * pw + px) * C;
              for (size_t i = 0; i < ys.size(); ++i) {
                float* row_lo = img + ys.low[i] * W * C;
                float* row_hi = img + ys.high[i] * W * C;
                for (size_t j = 0; j < xs.size(); ++j) {
                  const float w1 = ys.w_low[i] * xs.w_low[j] * inv;
                  const float w2 = ys.w_low[i] * xs.w_high[j] * inv;
                  const float w3 = ys.w_high[i] * xs.w_low[j] * inv;
                  const float w4 = ys.w_high[i] * xs.w_high[j] * inv;
                  float* v1 = row_lo + xs.low[j] * C;
                  float* v2 = row_lo + xs.high[j] * C;
                  float* v3 = row_hi + xs.low[j] * C;
                  float* v4 = row_hi + xs.high[j] * C;
                  if (v1 != v2 && v1 != v3) {  // four distinct corners: one fused pass
                    ScatterCorners(g + c0, w1, v1 + c0, w2, v2 + c0, w3, v3 + c0, w4, v4 + c0,
                                   c1 - c0);
                  } else {  // at the map's edge corners coincide: one pass each
                    Axpy(w1, g + c0, v1 + c0, c1 - c0);
                    Axpy(w2, g + c0, v2 + c0, c1 - c0);
                    Axpy(w3, g + c0, v3 + c0, c1 - c0);
                    Axpy(w4, g + c0, v4 + c0, c1 - c0);
                  }
                }
              }
            }
          }
        }
      }
    };
    const int64_t cost = std::max<int64_t>(1, K / std::max<int64_t>(B, 1)) * ph * pw * 64 * block;
    tensorflow::Shard(threads->num_threads, threads->workers, B * blocks, cost, work);
  }

 private:
  RoiAlignAttrs attrs_;
};

#if GOOGLE_CUDA
roi_align::GpuArgs MakeGpuArgs(const int64_t* dims, const RoiAlignAttrs& a) {
  roi_align::GpuArgs g;
  g.batch = static_cast<int>(dims[0]);
  g.height = static_cast<int>(dims[1]);
  g.width = static_cast<int>(dims[2]);
  g.channels = static_cast<int>(dims[3]);
  g.num_rois = dims[4];
  g.pooled_h = a.pooled_h;
  g.pooled_w = a.pooled_w;
  g.spatial_scale = a.spatial_scale;
  g.sampling_ratio = a.sampling_ratio;
  g.aligned = a.aligned;
  return g;
}

class RoiAlignGpuOp : public OpKernel {
 public:
  explicit RoiAlignGpuOp(OpKernelConstruction* ctx) : OpKernel(ctx), attrs_(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& features = ctx->input(0);
    const Tensor& rois = ctx->input(1);
    int64_t dims[5];
    OP_REQUIRES_OK(ctx, CheckForwardShapes(features, rois, dims));
    Tensor* output = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(
                            0, TensorShape({dims[4], attrs_.pooled_h, attrs_.pooled_w, dims[3]}),
                            &output));
    if (output->NumElements() == 0) return;
    OP_REQUIRES(ctx,
                roi_align::LaunchForwardGpu(ctx->eigen_device<Eigen::GpuDevice>(),
                                            MakeGpuArgs(dims, attrs_), features.flat<float>().data(),
                                            rois.flat<float>().data(), output->flat<float>().data()),
                tensorflow::errors::Internal("RoIAlign: CUDA kernel launch failed"));
  }

 private:
  RoiAlignAttrs attrs_;
};

class RoiAlignGradGpuOp : public OpKernel {
 public:
  explicit RoiAlignGradGpuOp(OpKernelConstruction* ctx) : OpKernel(ctx), attrs_(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& grad = ctx->input(0);
    const Tensor& rois = ctx->input(1);
    int64_t dims[5];
    OP_REQUIRES_OK(ctx, CheckBackwardShapes(grad, rois, ctx->input(2), attrs_.pooled_h,
                                            attrs_.pooled_w, dims));
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({dims[0], dims[1], dims[2], dims[3]}),
                                             &out));
    OP_REQUIRES(ctx,
                roi_align::LaunchBackwardGpu(ctx->eigen_device<Eigen::GpuDevice>(),
                                             MakeGpuArgs(dims, attrs_), grad.flat<float>().data(),
                                             rois.flat<float>().data(), out->flat<float>().data()),
                tensorflow::errors::Internal("RoIAlignGrad: CUDA kernel launch failed"));
  }

 private:
  RoiAlignAttrs attrs_;
};

REGISTER_KERNEL_BUILDER(Name("KdetRoiAlign").Device(::tensorflow::DEVICE_GPU)
                            .TypeConstraint<float>("T"),
                        RoiAlignGpuOp);
REGISTER_KERNEL_BUILDER(Name("KdetRoiAlignGrad").Device(::tensorflow::DEVICE_GPU)
                            .TypeConstraint<float>("T")
                            .HostMemory("features_shape"),
                        RoiAlignGradGpuOp);
#endif  // GOOGLE_CUDA

REGISTER_KERNEL_BUILDER(Name("KdetRoiAlign").Device(DEVICE_CPU).TypeConstraint<float>("T"),
                        RoiAlignOp);
REGISTER_KERNEL_BUILDER(Name("KdetRoiAlignGrad").Device(DEVICE_CPU).TypeConstraint<float>("T"),
                        RoiAlignGradOp);

}  // namespace kdet

// RoIAlign forward/backward TensorFlow ops (NHWC) with CPU kernels; CUDA kernels live in
// roi_align.cu.cc and are registered here when built with -DGOOGLE_CUDA=1.
//
//   KdetRoiAlign(features [B,H,W,C], rois [K,5]) -> [K, pooled_h, pooled_w, C]
//   KdetRoiAlignGrad(grad [K,ph,pw,C], rois [K,5], features_shape [4]) -> [B,H,W,C]
//
// rois rows are (batch_index, x1, y1, x2, y2) in input-image pixels; the math is in
// roi_align.h (mmcv semantics, average pooling, float32).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "roi_align.h"
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

class RoiAlignOp : public OpKernel {
 public:
  explicit RoiAlignOp(OpKernelConstruction* ctx) : OpKernel(ctx), attrs_(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& features = ctx->input(0);
    const Tensor& rois = ctx->input(1);
    OP_REQUIRES(ctx, features.dims() == 4,
                InvalidArgument("RoIAlign: features must be 4-D [B, H, W, C], got ",
                                features.shape().DebugString()));
    OP_REQUIRES_OK(ctx, CheckRoisShape(rois));
    const int64_t B = features.dim_size(0), H = features.dim_size(1), W = features.dim_size(2),
                  C = features.dim_size(3), K = rois.dim_size(0);
    const int ph = attrs_.pooled_h, pw = attrs_.pooled_w;
    Tensor* output = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({K, ph, pw, C}), &output));
    if (K == 0 || C == 0) return;
    OP_REQUIRES(ctx, H > 0 && W > 0,
                InvalidArgument("RoIAlign: features have an empty spatial size ",
                                features.shape().DebugString()));
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
            for (int64_t c = 0; c < C; ++c) {
              out[c] += w1 * v1[c] + w2 * v2[c] + w3 * v3[c] + w4 * v4[c];
            }
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
    const Tensor& shape_t = ctx->input(2);
    OP_REQUIRES_OK(ctx, CheckRoisShape(rois));
    OP_REQUIRES(ctx, shape_t.dims() == 1 && shape_t.NumElements() == 4,
                InvalidArgument("RoIAlignGrad: features_shape must have 4 elements, got ",
                                shape_t.shape().DebugString()));
    auto s = shape_t.vec<int32_t>();
    const int64_t B = s(0), H = s(1), W = s(2), C = s(3), K = rois.dim_size(0);
    const int ph = attrs_.pooled_h, pw = attrs_.pooled_w;
    OP_REQUIRES(ctx, B >= 0 && H >= 0 && W >= 0 && C >= 0,
                InvalidArgument("RoIAlignGrad: negative features_shape"));
    OP_REQUIRES(ctx, grad.dims() == 4 && grad.dim_size(0) == K && grad.dim_size(1) == ph &&
                         grad.dim_size(2) == pw && grad.dim_size(3) == C,
                InvalidArgument("RoIAlignGrad: grad must have shape [", K, ", ", ph, ", ", pw,
                                ", ", C, "], got ", grad.shape().DebugString()));
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({B, H, W, C}), &out));
    float* gdata = out->flat<float>().data();
    std::memset(gdata, 0, sizeof(float) * out->NumElements());
    if (K == 0 || C == 0) return;
    OP_REQUIRES(ctx, H > 0 && W > 0, InvalidArgument("RoIAlignGrad: empty spatial size"));
    const float* roi_data = rois.flat<float>().data();
    OP_REQUIRES_OK(ctx, CheckRoisValues(roi_data, K, B));
    const float* top = grad.flat<float>().data();

    // RoIs of each image; work unit = (image, block of channels): units never write the
    // same feature element, so no atomics are needed.
    std::vector<std::vector<int64_t>> by_image(B);
    for (int64_t k = 0; k < K; ++k) by_image[static_cast<int64_t>(roi_data[5 * k])].push_back(k);
    const int64_t block = std::min<int64_t>(C, 16);
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
                  for (int64_t c = c0; c < c1; ++c) {
                    v1[c] += w1 * g[c];
                    v2[c] += w2 * g[c];
                    v3[c] += w3 * g[c];
                    v4[c] += w4 * g[c];
                  }
                }
              }
            }
          }
        }
      }
    };
    const auto* threads = ctx->device()->tensorflow_cpu_worker_threads();
    const int64_t cost = std::max<int64_t>(1, K / std::max<int64_t>(B, 1)) * ph * pw * 64 * block;
    tensorflow::Shard(threads->num_threads, threads->workers, B * blocks, cost, work);
  }

 private:
  RoiAlignAttrs attrs_;
};

REGISTER_KERNEL_BUILDER(Name("KdetRoiAlign").Device(DEVICE_CPU).TypeConstraint<float>("T"),
                        RoiAlignOp);
REGISTER_KERNEL_BUILDER(Name("KdetRoiAlignGrad").Device(DEVICE_CPU).TypeConstraint<float>("T"),
                        RoiAlignGradOp);

}  // namespace kdet

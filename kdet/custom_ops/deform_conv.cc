// Deformable convolution v1 (DeformConv2d) and modulated v2 (ModulatedDeformConv2d) as
// TensorFlow ops, NHWC: op registrations, argument checks and the CPU kernels.
//
//   KdetDeformConv2d(input, offset, mask, weight, bias) -> output
//   KdetDeformConv2dGrad(input, offset, mask, weight, grad_output)
//       -> grad_input, grad_offset, grad_mask, grad_weight, grad_bias
//
// mask is only read when use_mask (DCNv2), bias only when use_bias; callers pass an empty
// tensor otherwise, and the matching gradient output is empty too.
// GPU kernels (float32/half/bfloat16; CUDA code in deform_conv.cu.cc) are registered at the
// end of this file when built with -DGOOGLE_CUDA=1.
//
// Semantics follow mmcv's deformable_im2col / modulated_deformable_im2col (see
// deform_conv.h for the sampling rule). The CPU kernel is bilinear im2col + GEMM over blocks
// of output pixels, in parallel on TensorFlow's intra-op thread pool; the backward pass
// recomputes the columns chunk by chunk (bounded memory), then runs the two GEMMs, the
// offset/mask gradients (sharded over output pixels) and col2im (contiguous row ranges, each
// scattering into a private copy of the image's input gradient, summed at the end). half
// and bfloat16 inputs are converted to float32 and accumulated in float32; float64 is
// computed in float64 (gradient checks).
#if GOOGLE_CUDA
#define EIGEN_USE_GPU
#endif
#include <algorithm>
#include <functional>
#include <type_traits>
#include <vector>

#include "deform_conv.h"
#include "deform_conv_gpu.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/framework/tensor.h"
#include "tensorflow/core/platform/threadpool.h"
#include "Eigen/Core"

namespace kdet {

using tensorflow::DEVICE_CPU;
using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Status;
using tensorflow::Tensor;
using tensorflow::TensorShape;
using tensorflow::errors::InvalidArgument;
using tensorflow::shape_inference::DimensionHandle;
using tensorflow::shape_inference::InferenceContext;
using tensorflow::shape_inference::ShapeHandle;

#define KDET_DEFORM_ATTRS                                   \
  Attr("T: {half, bfloat16, float, double}")                \
      .Attr("strides: list(int) = [1, 1]")                  \
      .Attr("padding: list(int) = [0, 0]")                  \
      .Attr("dilation: list(int) = [1, 1]")                 \
      .Attr("groups: int = 1")                              \
      .Attr("deform_groups: int = 1")                       \
      .Attr("use_mask: bool = false")                       \
      .Attr("use_bias: bool = false")

namespace {

// Output shape [B, Ho, Wo, Cout]; unknown dimensions stay unknown.
Status DeformConvShape(InferenceContext* c) {
  ShapeHandle input, weight;
  TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &input));
  TF_RETURN_IF_ERROR(c->WithRank(c->input(3), 4, &weight));
  std::vector<int> strides, padding, dilation;
  TF_RETURN_IF_ERROR(c->GetAttr("strides", &strides));
  TF_RETURN_IF_ERROR(c->GetAttr("padding", &padding));
  TF_RETURN_IF_ERROR(c->GetAttr("dilation", &dilation));
  if (strides.size() != 2 || padding.size() != 2 || dilation.size() != 2) {
    return InvalidArgument("strides, padding and dilation must have 2 elements each");
  }
  DimensionHandle out[2];
  for (int i = 0; i < 2; ++i) {
    DimensionHandle in = c->Dim(input, 1 + i), k = c->Dim(weight, i);
    if (c->ValueKnown(in) && c->ValueKnown(k) && strides[i] > 0) {
      const int64_t size = ConvOutSize(c->Value(in), c->Value(k), strides[i], padding[i],
                                       dilation[i]);
      out[i] = c->MakeDim(size > 0 ? size : 0);
    } else {
      out[i] = c->UnknownDim();
    }
  }
  c->set_output(0, c->MakeShape({c->Dim(input, 0), out[0], out[1], c->Dim(weight, 3)}));
  return Status();
}

}  // namespace

REGISTER_OP("KdetDeformConv2d")
    .Input("input: T")
    .Input("offset: T")
    .Input("mask: T")
    .Input("weight: T")
    .Input("bias: T")
    .Output("output: T")
    .KDET_DEFORM_ATTRS
    .SetShapeFn(DeformConvShape)
    .Doc("Deformable convolution (mmcv semantics), NHWC. See kdet/custom_ops/deform_conv.h.");

REGISTER_OP("KdetDeformConv2dGrad")
    .Input("input: T")
    .Input("offset: T")
    .Input("mask: T")
    .Input("weight: T")
    .Input("grad_output: T")
    .Output("grad_input: T")
    .Output("grad_offset: T")
    .Output("grad_mask: T")
    .Output("grad_weight: T")
    .Output("grad_bias: T")
    .KDET_DEFORM_ATTRS
    .SetShapeFn([](InferenceContext* c) {
      for (int i = 0; i < 4; ++i) c->set_output(i, c->input(i));
      bool use_bias = false;
      TF_RETURN_IF_ERROR(c->GetAttr("use_bias", &use_bias));
      ShapeHandle weight;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(3), 4, &weight));
      c->set_output(4, use_bias ? c->Vector(c->Dim(weight, 3)) : c->Vector(0));
      return Status();
    })
    .Doc("Gradients of KdetDeformConv2d with respect to input, offset, mask, weight, bias.");

// ------------------------------------------------------------------------ argument checks

// Reads the attributes shared by the forward and gradient kernels.
class DeformConvBase : public OpKernel {
 public:
  explicit DeformConvBase(OpKernelConstruction* ctx) : OpKernel(ctx) {
    std::vector<int> strides, padding, dilation;
    OP_REQUIRES_OK(ctx, ctx->GetAttr("strides", &strides));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("padding", &padding));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("dilation", &dilation));
    OP_REQUIRES(ctx, strides.size() == 2 && padding.size() == 2 && dilation.size() == 2,
                InvalidArgument("strides, padding and dilation must have 2 elements each"));
    OP_REQUIRES(ctx, strides[0] > 0 && strides[1] > 0,
                InvalidArgument("strides must be positive"));
    OP_REQUIRES(ctx, dilation[0] > 0 && dilation[1] > 0,
                InvalidArgument("dilation must be positive"));
    OP_REQUIRES(ctx, padding[0] >= 0 && padding[1] >= 0,
                InvalidArgument("padding must be non-negative"));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("groups", &groups_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("deform_groups", &deform_groups_));
    OP_REQUIRES(ctx, groups_ > 0 && deform_groups_ > 0,
                InvalidArgument("groups and deform_groups must be positive"));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("use_mask", &use_mask_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("use_bias", &use_bias_));
    stride_[0] = strides[0]; stride_[1] = strides[1];
    pad_[0] = padding[0]; pad_[1] = padding[1];
    dilation_[0] = dilation[0]; dilation_[1] = dilation[1];
  }

 protected:
  // Checks shapes of input, offset, mask, weight (and bias when given) and fills p.
  Status Check(const Tensor& input, const Tensor& offset, const Tensor& mask,
               const Tensor& weight, const Tensor* bias, DeformConvParams* p) const {
    if (input.dims() != 4) {
      return InvalidArgument("input must be [B, H, W, C], got shape ",
                             input.shape().DebugString());
    }
    if (weight.dims() != 4) {
      return InvalidArgument("weight must be [kh, kw, C / groups, Cout], got shape ",
                             weight.shape().DebugString());
    }
    p->batch = input.dim_size(0);
    p->height = input.dim_size(1);
    p->width = input.dim_size(2);
    p->channels = input.dim_size(3);
    p->kernel_h = weight.dim_size(0);
    p->kernel_w = weight.dim_size(1);
    p->out_channels = weight.dim_size(3);
    p->stride_h = stride_[0]; p->stride_w = stride_[1];
    p->pad_h = pad_[0]; p->pad_w = pad_[1];
    p->dilation_h = dilation_[0]; p->dilation_w = dilation_[1];
    p->groups = groups_;
    p->deform_groups = deform_groups_;
    p->use_mask = use_mask_;
    p->use_bias = use_bias_;
    if (p->kernel_h < 1 || p->kernel_w < 1) {
      return InvalidArgument("weight kernel size must be at least 1x1, got weight shape ",
                             weight.shape().DebugString());
    }
    if (p->channels % groups_ != 0) {
      return InvalidArgument("input channels (", p->channels, ") must be divisible by groups (",
                             groups_, ")");
    }
    if (p->out_channels % groups_ != 0) {
      return InvalidArgument("output channels (", p->out_channels,
                             ") must be divisible by groups (", groups_, ")");
    }
    if (p->channels % deform_groups_ != 0) {
      return InvalidArgument("input channels (", p->channels,
                             ") must be divisible by deform_groups (", deform_groups_, ")");
    }
    if (weight.dim_size(2) != p->channels / groups_) {
      return InvalidArgument("weight must be [kh, kw, C / groups, Cout] = [kh, kw, ",
                             p->channels / groups_, ", Cout], got shape ",
                             weight.shape().DebugString());
    }
    p->out_height = ConvOutSize(p->height, p->kernel_h, p->stride_h, p->pad_h, p->dilation_h);
    p->out_width = ConvOutSize(p->width, p->kernel_w, p->stride_w, p->pad_w, p->dilation_w);
    if (p->out_height < 1 || p->out_width < 1) {
      return InvalidArgument("input ", p->height, "x", p->width,
                             " is too small for the dilated kernel with this padding");
    }
    const TensorShape want_offset(
        {p->batch, p->out_height, p->out_width, p->offset_channels()});
    if (offset.shape() != want_offset) {
      return InvalidArgument("offset must have shape [B, Ho, Wo, 2 * deform_groups * kh * kw] = ",
                             want_offset.DebugString(), ", got ", offset.shape().DebugString());
    }
    if (use_mask_) {
      const TensorShape want_mask({p->batch, p->out_height, p->out_width, p->mask_channels()});
      if (mask.shape() != want_mask) {
        return InvalidArgument("mask must have shape [B, Ho, Wo, deform_groups * kh * kw] = ",
                               want_mask.DebugString(), ", got ", mask.shape().DebugString());
      }
    }
    if (use_bias_ && bias != nullptr &&
        (bias->dims() != 1 || bias->dim_size(0) != p->out_channels)) {
      return InvalidArgument("bias must have shape [", p->out_channels, "], got ",
                             bias->shape().DebugString());
    }
    return Status();
  }

  int64_t stride_[2], pad_[2], dilation_[2];
  int groups_, deform_groups_;
  bool use_mask_, use_bias_;
};

// ------------------------------------------------------------------------ CPU helpers

template <typename T>
struct AccType { using type = float; };
template <>
struct AccType<double> { using type = double; };

// The tensor's data as S: the tensor itself when T == S, else a converted copy in storage.
template <typename T, typename S>
const S* AsAcc(const Tensor& t, std::vector<S>* storage) {
  const T* src = t.flat<T>().data();
  if constexpr (std::is_same<T, S>::value) {
    return src;
  } else {
    const int64_t n = t.NumElements();
    storage->resize(n);
    for (int64_t i = 0; i < n; ++i) (*storage)[i] = static_cast<S>(src[i]);
    return storage->data();
  }
}

template <typename T, typename S>
void StoreFromAcc(const S* src, Tensor* t) {
  T* dst = t->flat<T>().data();
  const int64_t n = t->NumElements();
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<T>(src[i]);
}

template <typename S>
using RowMat = Eigen::Matrix<S, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <typename S>
using ConstMap = Eigen::Map<const RowMat<S>, Eigen::Unaligned, Eigen::OuterStride<>>;
template <typename S>
using MutMap = Eigen::Map<RowMat<S>, Eigen::Unaligned, Eigen::OuterStride<>>;

// Calls fn(column_offset, channel, length) for the channel range [c0, c1) of kernel point k,
// split where it crosses a convolution-group boundary: column_offset is the position of
// `channel` in one row of the [groups][kernel points][C / groups] column layout.
template <typename Fn>
inline void ForColumnSegments(const DeformConvParams& p, int64_t k, int64_t c0, int64_t c1,
                              Fn fn) {
  const int64_t cg = p.group_channels(), kp = p.kernel_points();
  while (c0 < c1) {
    const int64_t g = c0 / cg;
    const int64_t end = std::min(c1, (g + 1) * cg);
    fn(g * kp * cg + k * cg + (c0 - g * cg), c0, end - c0);
    c0 = end;
  }
}

// The sampling point of output row r (flattened b, ho, wo), deform group dg, kernel point k.
template <typename S>
inline void SamplePoint(const DeformConvParams& p, const S* offset, int64_t r, int64_t dg,
                        int64_t k, Bilinear<S>* s) {
  const int64_t pix = p.out_height * p.out_width;
  const int64_t ho = (r % pix) / p.out_width, wo = r % p.out_width;
  const int64_t ki = k / p.kernel_w, kj = k % p.kernel_w;
  const S* o = offset + r * p.offset_channels() + (dg * p.kernel_points() + k) * 2;
  const S h = static_cast<S>(ho * p.stride_h - p.pad_h + ki * p.dilation_h) + o[0];
  const S w = static_cast<S>(wo * p.stride_w - p.pad_w + kj * p.dilation_w) + o[1];
  s->Set(h, w, p.height, p.width);
}

// Bilinear im2col of rows [r0, r1) into col ([r1 - r0, col_width], group-major layout).
template <typename S>
void Im2Col(const DeformConvParams& p, const S* input, const S* offset, const S* mask,
            int64_t r0, int64_t r1, S* col) {
  const int64_t pix = p.out_height * p.out_width, kp = p.kernel_points();
  const int64_t cdg = p.deform_group_channels(), cw = p.col_width();
  Bilinear<S> s;
  for (int64_t r = r0; r < r1; ++r) {
    S* row = col + (r - r0) * cw;
    const S* image = input + (r / pix) * p.height * p.width * p.channels;
    for (int64_t dg = 0; dg < p.deform_groups; ++dg) {
      for (int64_t k = 0; k < kp; ++k) {
        SamplePoint(p, offset, r, dg, k, &s);
        const S m = p.use_mask ? mask[r * p.mask_channels() + dg * kp + k] : S(1);
        const S* src[4];
        S wt[4];
        for (int i = 0; i < 4; ++i) {
          // A corner outside the map gets weight 0 and reads a valid pixel (the first).
          src[i] = image + (s.ok[i] ? (s.y[i] * p.width + s.x[i]) * p.channels : 0);
          wt[i] = s.weight[i] * m;
        }
        ForColumnSegments(p, k, dg * cdg, (dg + 1) * cdg, [&](int64_t dst, int64_t c, int64_t n) {
          S* out = row + dst;
          if (!s.inside) {
            std::fill(out, out + n, S(0));
            return;
          }
          const S *a = src[0] + c, *b = src[1] + c, *d = src[2] + c, *e = src[3] + c;
          for (int64_t j = 0; j < n; ++j) {
            out[j] = wt[0] * a[j] + wt[1] * b[j] + wt[2] * d[j] + wt[3] * e[j];
          }
        });
      }
    }
  }
}

// Rows per im2col + GEMM block: col block of 256 x (9 * 256) floats is 2.4 MB.
constexpr int64_t kBlockRows = 256;
// Elements per column buffer in the backward pass (two such buffers: 2 x 32 MB in float32).
constexpr int64_t kChunkElements = int64_t{8} << 20;
// Most private copies of an image's input gradient that col2im scatters into at once.
constexpr int64_t kMaxScatterSplits = 8;

// ------------------------------------------------------------------------ forward

template <typename T>
class DeformConv2dOp : public DeformConvBase {
 public:
  using S = typename AccType<T>::type;
  explicit DeformConv2dOp(OpKernelConstruction* ctx) : DeformConvBase(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor &input = ctx->input(0), &offset = ctx->input(1), &mask = ctx->input(2),
                 &weight = ctx->input(3), &bias = ctx->input(4);
    DeformConvParams p;
    OP_REQUIRES_OK(ctx, Check(input, offset, mask, weight, &bias, &p));
    Tensor* output = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(
                            0, TensorShape({p.batch, p.out_height, p.out_width, p.out_channels}),
                            &output));
    const int64_t rows = p.rows();
    if (rows == 0 || p.out_channels == 0) return;

    std::vector<S> in_s, off_s, mask_s, w_s, b_s, out_s;
    const S* x = AsAcc<T, S>(input, &in_s);
    const S* off = AsAcc<T, S>(offset, &off_s);
    const S* m = p.use_mask ? AsAcc<T, S>(mask, &mask_s) : nullptr;
    const S* w = AsAcc<T, S>(weight, &w_s);
    const S* b = p.use_bias ? AsAcc<T, S>(bias, &b_s) : nullptr;
    S* out;
    if constexpr (std::is_same<T, S>::value) {
      out = output->flat<T>().data();
    } else {
      out_s.resize(rows * p.out_channels);
      out = out_s.data();
    }

    const int64_t cw = p.col_width(), kcg = p.kernel_points() * p.group_channels();
    const int64_t cout = p.out_channels, coutg = p.group_out_channels();
    const int64_t blocks = (rows + kBlockRows - 1) / kBlockRows;
    auto work = [&](int64_t first, int64_t last) {
      std::vector<S> col(kBlockRows * cw);
      for (int64_t blk = first; blk < last; ++blk) {
        const int64_t r0 = blk * kBlockRows, r1 = std::min(rows, r0 + kBlockRows), n = r1 - r0;
        Im2Col(p, x, off, m, r0, r1, col.data());
        for (int64_t g = 0; g < p.groups; ++g) {
          ConstMap<S> a(col.data() + g * kcg, n, kcg, Eigen::OuterStride<>(cw));
          ConstMap<S> wg(w + g * coutg, kcg, coutg, Eigen::OuterStride<>(cout));
          MutMap<S> o(out + r0 * cout + g * coutg, n, coutg, Eigen::OuterStride<>(cout));
          o.noalias() = a * wg;
        }
        if (b != nullptr) {
          for (int64_t r = r0; r < r1; ++r) {
            S* o = out + r * cout;
            for (int64_t c = 0; c < cout; ++c) o[c] += b[c];
          }
        }
      }
    };
    const int64_t cost = kBlockRows * cw * (cout / p.groups) * 2 + kBlockRows * cw * 8;
    ctx->device()->tensorflow_cpu_worker_threads()->workers->ParallelFor(blocks, cost, work);
    if constexpr (!std::is_same<T, S>::value) StoreFromAcc<T, S>(out, output);
  }
};

// ------------------------------------------------------------------------ backward

template <typename T>
class DeformConv2dGradOp : public DeformConvBase {
 public:
  using S = typename AccType<T>::type;
  explicit DeformConv2dGradOp(OpKernelConstruction* ctx) : DeformConvBase(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor &input = ctx->input(0), &offset = ctx->input(1), &mask = ctx->input(2),
                 &weight = ctx->input(3), &grad_output = ctx->input(4);
    DeformConvParams p;
    OP_REQUIRES_OK(ctx, Check(input, offset, mask, weight, nullptr, &p));
    const TensorShape out_shape({p.batch, p.out_height, p.out_width, p.out_channels});
    OP_REQUIRES(ctx, grad_output.shape() == out_shape,
                InvalidArgument("grad_output must have shape ", out_shape.DebugString(),
                                ", got ", grad_output.shape().DebugString()));
    Tensor *gx_t, *goff_t, *gm_t, *gw_t, *gb_t;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, input.shape(), &gx_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, offset.shape(), &goff_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, mask.shape(), &gm_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(3, weight.shape(), &gw_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(
                            4, TensorShape({p.use_bias ? p.out_channels : 0}), &gb_t));

    std::vector<S> in_s, off_s, mask_s, w_s, go_s;
    const S* x = AsAcc<T, S>(input, &in_s);
    const S* off = AsAcc<T, S>(offset, &off_s);
    const S* m = p.use_mask ? AsAcc<T, S>(mask, &mask_s) : nullptr;
    const S* w = AsAcc<T, S>(weight, &w_s);
    const S* go = AsAcc<T, S>(grad_output, &go_s);

    // Gradients accumulate in S buffers (the outputs themselves when T == S).
    std::vector<S> gx_s, goff_s, gm_s, gw_s, gb_s;
    S* gx = Target(gx_t, &gx_s);
    S* goff = Target(goff_t, &goff_s);
    S* gm = Target(gm_t, &gm_s);
    S* gw = Target(gw_t, &gw_s);
    S* gb = Target(gb_t, &gb_s);
    std::fill(gx, gx + gx_t->NumElements(), S(0));
    std::fill(gw, gw + gw_t->NumElements(), S(0));
    std::fill(gb, gb + gb_t->NumElements(), S(0));
    // goff / gm are written exactly once per element below (every row is visited).

    if (p.rows() > 0 && p.out_channels > 0) {
      Backward(ctx, p, x, off, m, w, go, gx, goff, gm, gw, gb);
    } else {
      std::fill(goff, goff + goff_t->NumElements(), S(0));
      std::fill(gm, gm + gm_t->NumElements(), S(0));
    }

    if constexpr (!std::is_same<T, S>::value) {
      StoreFromAcc<T, S>(gx, gx_t);
      StoreFromAcc<T, S>(goff, goff_t);
      StoreFromAcc<T, S>(gm, gm_t);
      StoreFromAcc<T, S>(gw, gw_t);
      StoreFromAcc<T, S>(gb, gb_t);
    }
  }

 private:
  static S* Target(Tensor* t, std::vector<S>* storage) {
    if constexpr (std::is_same<T, S>::value) {
      return t->flat<T>().data();
    } else {
      storage->assign(t->NumElements(), S(0));
      return storage->data();
    }
  }

  void Backward(OpKernelContext* ctx, const DeformConvParams& p, const S* x, const S* off,
                const S* m, const S* w, const S* go, S* gx, S* goff, S* gm, S* gw,
                S* gb) const {
    auto* pool = ctx->device()->tensorflow_cpu_worker_threads()->workers;
    const int64_t cw = p.col_width(), kp = p.kernel_points();
    const int64_t kcg = kp * p.group_channels(), cout = p.out_channels;
    const int64_t coutg = p.group_out_channels(), cdg = p.deform_group_channels();
    const int64_t pix = p.out_height * p.out_width;
    const int64_t image_size = p.height * p.width * p.channels;
    // Chunks stay inside one image; at most kChunkElements elements per column buffer.
    const int64_t chunk = std::min(
        pix, std::max<int64_t>(kBlockRows, (kChunkElements / std::max<int64_t>(cw, 1)) /
                                               kBlockRows * kBlockRows));
    std::vector<S> col(chunk * cw), gcol(chunk * cw);
    // col2im runs over contiguous row ranges, each scattering into its own copy of the
    // image's input gradient (rows sample anywhere, so ranges may hit the same pixels); the
    // copies are summed per image. Channel-sharding instead would stride through memory by
    // whole pixels (1 KB for 256 channels) and thrash the caches.
    const int64_t splits = std::max<int64_t>(
        1, std::min<int64_t>({kMaxScatterSplits, pool->NumThreads(),
                              (chunk + kBlockRows - 1) / kBlockRows}));
    std::vector<std::vector<S>> scatter(splits > 1 ? splits : 0);
    // grad_weight rows per GEMM unit: about one unit per thread and group (a GEMM with few
    // rows re-packs grad_output for little work), multiple of 16, at least 64.
    const int64_t weight_rows = std::max<int64_t>(
        64, ((kcg + pool->NumThreads() - 1) / pool->NumThreads() + 15) / 16 * 16);
    for (auto& buf : scatter) buf.resize(image_size);

    for (int64_t b = 0; b < p.batch; ++b) {
      S* gimage = gx + b * image_size;
      for (auto& buf : scatter) std::fill(buf.begin(), buf.end(), S(0));
      for (int64_t c0 = b * pix; c0 < (b + 1) * pix; c0 += chunk) {
        const int64_t c1 = std::min((b + 1) * pix, c0 + chunk), n = c1 - c0;
        BackwardRows(pool, p, x, off, m, w, go, goff, gm, c0, c1, col.data(), gcol.data());

        // col2im: scatter the column gradients into grad_input.
        auto col2im = [&](int64_t first, int64_t last) {
          for (int64_t u = first; u < last; ++u) {
            S* dst = splits > 1 ? scatter[u].data() : gimage;
            const int64_t r0 = c0 + n * u / splits, r1 = c0 + n * (u + 1) / splits;
            Col2Im(p, off, m, gcol.data() + (r0 - c0) * cw, r0, r1, dst);
          }
        };
        pool->ParallelFor(splits, n / splits * kp * (cdg * 8 + 40) * p.deform_groups, col2im);

        // grad_weight += columns^T x grad_output, sharded over the rows of grad_weight.
        const int64_t wblocks_per_group = (kcg + weight_rows - 1) / weight_rows;
        auto weight_work = [&](int64_t first, int64_t last) {
          for (int64_t u = first; u < last; ++u) {
            const int64_t g = u / wblocks_per_group;
            const int64_t k0 = (u % wblocks_per_group) * weight_rows;
            const int64_t nk = std::min(kcg, k0 + weight_rows) - k0;
            ConstMap<S> a(col.data() + g * kcg + k0, n, nk, Eigen::OuterStride<>(cw));
            ConstMap<S> gog(go + c0 * cout + g * coutg, n, coutg, Eigen::OuterStride<>(cout));
            MutMap<S> gwg(gw + k0 * cout + g * coutg, nk, coutg, Eigen::OuterStride<>(cout));
            gwg.noalias() += a.transpose() * gog;
          }
        };
        pool->ParallelFor(p.groups * wblocks_per_group, n * weight_rows * coutg * 2,
                          weight_work);

        if (p.use_bias) {
          for (int64_t r = c0; r < c1; ++r) {
            const S* g = go + r * cout;
            for (int64_t c = 0; c < cout; ++c) gb[c] += g[c];
          }
        }
      }
      if (splits > 1) {  // sum the scatter copies into grad_input, sharded over pixels
        auto reduce = [&](int64_t first, int64_t last) {
          for (int64_t i = first * p.channels; i < last * p.channels; ++i) {
            S acc = S(0);
            for (int64_t u = 0; u < splits; ++u) acc += scatter[u][i];
            gimage[i] = acc;
          }
        };
        pool->ParallelFor(p.height * p.width, p.channels * splits * 2, reduce);
      }
    }
  }

  // For output rows [c0, c1): columns into col, column gradients (grad_output x weight^T)
  // into gcol, and the offset and mask gradients; in parallel over blocks of rows.
  static void BackwardRows(tensorflow::thread::ThreadPool* pool, const DeformConvParams& p,
                           const S* x, const S* off, const S* m, const S* w, const S* go,
                           S* goff, S* gm, int64_t c0, int64_t c1, S* col, S* gcol) {
    using Vec = Eigen::Matrix<S, Eigen::Dynamic, 1>;
    const int64_t cw = p.col_width(), kp = p.kernel_points();
    const int64_t kcg = kp * p.group_channels(), cout = p.out_channels;
    const int64_t coutg = p.group_out_channels(), cdg = p.deform_group_channels();
    const int64_t pix = p.out_height * p.out_width;
    auto work = [&](int64_t first, int64_t last) {
      Bilinear<S> s;
      for (int64_t blk = first; blk < last; ++blk) {
        const int64_t r0 = c0 + blk * kBlockRows, r1 = std::min(c1, r0 + kBlockRows);
        const int64_t nb = r1 - r0;
        S* colb = col + (r0 - c0) * cw;
        S* gcolb = gcol + (r0 - c0) * cw;
        Im2Col(p, x, off, m, r0, r1, colb);
        for (int64_t g = 0; g < p.groups; ++g) {
          ConstMap<S> gog(go + r0 * cout + g * coutg, nb, coutg, Eigen::OuterStride<>(cout));
          ConstMap<S> wg(w + g * coutg, kcg, coutg, Eigen::OuterStride<>(cout));
          MutMap<S> gc(gcolb + g * kcg, nb, kcg, Eigen::OuterStride<>(cw));
          gc.noalias() = gog * wg.transpose();
        }
        for (int64_t r = r0; r < r1; ++r) {
          const S* image = x + (r / pix) * p.height * p.width * p.channels;
          const S* grow = gcolb + (r - r0) * cw;
          for (int64_t dg = 0; dg < p.deform_groups; ++dg) {
            for (int64_t k = 0; k < kp; ++k) {
              SamplePoint(p, off, r, dg, k, &s);
              const S mk = p.use_mask ? m[r * p.mask_channels() + dg * kp + k] : S(1);
              // G[i] = sum over the deform group's channels of grad_col * corner value i.
              S G[4] = {S(0), S(0), S(0), S(0)};
              if (s.inside) {
                ForColumnSegments(p, k, dg * cdg, (dg + 1) * cdg,
                                  [&](int64_t dst, int64_t c, int64_t len) {
                  Eigen::Map<const Vec> gr(grow + dst, len);
                  for (int i = 0; i < 4; ++i) {
                    if (!s.ok[i]) continue;
                    G[i] += gr.dot(Eigen::Map<const Vec>(
                        image + (s.y[i] * p.width + s.x[i]) * p.channels + c, len));
                  }
                });
              }
              S dh[4], dw[4];
              s.DerivH(dh);
              s.DerivW(dw);
              S gh = S(0), gww = S(0), gmk = S(0);
              for (int i = 0; i < 4; ++i) {  // G is 0 unless inside
                gh += dh[i] * G[i];
                gww += dw[i] * G[i];
                gmk += s.weight[i] * G[i];  // weight is 0 for corners outside the map
              }
              S* go_off = goff + r * p.offset_channels() + (dg * kp + k) * 2;
              go_off[0] = gh * mk;
              go_off[1] = gww * mk;
              if (p.use_mask) gm[r * p.mask_channels() + dg * kp + k] = gmk;
            }
          }
        }
      }
    };
    const int64_t blocks = (c1 - c0 + kBlockRows - 1) / kBlockRows;
    pool->ParallelFor(blocks, kBlockRows * cw * (coutg * 2 + 16), work);
  }

  // Scatters the column gradients of rows [r0, r1) (gcol starts at row r0) into gimage, the
  // input gradient of the image these rows belong to, [H, W, C].
  static void Col2Im(const DeformConvParams& p, const S* off, const S* m, const S* gcol,
                     int64_t r0, int64_t r1, S* gimage) {
    const int64_t cw = p.col_width(), kp = p.kernel_points();
    const int64_t cdg = p.deform_group_channels();
    Bilinear<S> s;
    for (int64_t r = r0; r < r1; ++r) {
      const S* grow = gcol + (r - r0) * cw;
      for (int64_t dg = 0; dg < p.deform_groups; ++dg) {
        for (int64_t k = 0; k < kp; ++k) {
          SamplePoint(p, off, r, dg, k, &s);
          if (!s.inside) continue;
          const S mk = p.use_mask ? m[r * p.mask_channels() + dg * kp + k] : S(1);
          S* dst[4];
          S wt[4];
          for (int i = 0; i < 4; ++i) {
            // A corner outside the map has weight 0; it writes (zero) to the first pixel.
            dst[i] = gimage + (s.ok[i] ? (s.y[i] * p.width + s.x[i]) * p.channels : 0);
            wt[i] = s.weight[i] * mk;
          }
          ForColumnSegments(p, k, dg * cdg, (dg + 1) * cdg,
                            [&](int64_t col_off, int64_t c, int64_t len) {
            const S* gr = grow + col_off;
            for (int i = 0; i < 4; ++i) {
              if (wt[i] == S(0)) continue;
              S* gi = dst[i] + c;
              const S wi = wt[i];
              for (int64_t j = 0; j < len; ++j) gi[j] += wi * gr[j];
            }
          });
        }
      }
    }
  }
};

#define KDET_REGISTER_DEFORM_CPU(T)                                                      \
  REGISTER_KERNEL_BUILDER(                                                               \
      Name("KdetDeformConv2d").Device(DEVICE_CPU).TypeConstraint<T>("T"),                \
      DeformConv2dOp<T>);                                                                \
  REGISTER_KERNEL_BUILDER(                                                               \
      Name("KdetDeformConv2dGrad").Device(DEVICE_CPU).TypeConstraint<T>("T"),            \
      DeformConv2dGradOp<T>);

KDET_REGISTER_DEFORM_CPU(Eigen::half);
KDET_REGISTER_DEFORM_CPU(Eigen::bfloat16);
KDET_REGISTER_DEFORM_CPU(float);
KDET_REGISTER_DEFORM_CPU(double);

// ------------------------------------------------------------------------ GPU

#if GOOGLE_CUDA
namespace {

using GpuDevice = Eigen::GpuDevice;

// Column-buffer elements per chunk on GPU (col and gcol: 2 x 128 MB in float32).
constexpr int64_t kGpuChunkElements = int64_t{32} << 20;

int64_t GpuChunkRows(const DeformConvParams& p) {
  return std::max<int64_t>(1, std::min(p.rows(), kGpuChunkElements /
                                                     std::max<int64_t>(p.col_width(), 1)));
}

Status LaunchStatus(bool ok, const char* what) {
  return ok ? Status() : tensorflow::errors::Internal("DeformConv2d: CUDA launch of ", what,
                                                      " failed");
}

// The tensor's data as float32 on the device: itself for float, else a converted temporary.
template <typename T>
Status FloatData(OpKernelContext* ctx, const Tensor& t, Tensor* tmp, const float** out) {
  if constexpr (std::is_same<T, float>::value) {
    *out = t.flat<float>().data();
    return Status();
  } else {
    TF_RETURN_IF_ERROR(ctx->allocate_temp(tensorflow::DT_FLOAT,
                                          TensorShape({t.NumElements()}), tmp));
    *out = tmp->flat<float>().data();
    return LaunchStatus(deform_gpu::ToFloat<T>(ctx->eigen_device<GpuDevice>(),
                                               t.flat<T>().data(), t.NumElements(),
                                               tmp->flat<float>().data()),
                        "ToFloat");
  }
}

// A float32 accumulator for output t: t itself for float, else a temporary.
template <typename T>
Status FloatTarget(OpKernelContext* ctx, Tensor* t, Tensor* tmp, float** out) {
  if constexpr (std::is_same<T, float>::value) {
    *out = t->flat<float>().data();
    return Status();
  } else {
    TF_RETURN_IF_ERROR(ctx->allocate_temp(tensorflow::DT_FLOAT,
                                          TensorShape({t->NumElements()}), tmp));
    *out = tmp->flat<float>().data();
    return Status();
  }
}

template <typename T>
Status StoreTarget(OpKernelContext* ctx, const float* acc, Tensor* t) {
  if constexpr (std::is_same<T, float>::value) {
    return Status();
  } else {
    return LaunchStatus(deform_gpu::FromFloat<T>(ctx->eigen_device<GpuDevice>(), acc,
                                                 t->NumElements(), t->flat<T>().data()),
                        "FromFloat");
  }
}

}  // namespace

template <typename T>
class DeformConv2dGpuOp : public DeformConvBase {
 public:
  explicit DeformConv2dGpuOp(OpKernelConstruction* ctx) : DeformConvBase(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor &input = ctx->input(0), &offset = ctx->input(1), &mask = ctx->input(2),
                 &weight = ctx->input(3), &bias = ctx->input(4);
    DeformConvParams p;
    OP_REQUIRES_OK(ctx, Check(input, offset, mask, weight, &bias, &p));
    Tensor* output = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(
                            0, TensorShape({p.batch, p.out_height, p.out_width, p.out_channels}),
                            &output));
    const int64_t rows = p.rows(), cout = p.out_channels, cw = p.col_width();
    if (rows == 0 || cout == 0) return;
    const GpuDevice& d = ctx->eigen_device<GpuDevice>();
    Tensor w_tmp, b_tmp, out_tmp, col_t;
    const float *w, *b = nullptr;
    float* out;
    OP_REQUIRES_OK(ctx, FloatData<T>(ctx, weight, &w_tmp, &w));
    if (p.use_bias) OP_REQUIRES_OK(ctx, FloatData<T>(ctx, bias, &b_tmp, &b));
    OP_REQUIRES_OK(ctx, FloatTarget<T>(ctx, output, &out_tmp, &out));
    const int64_t chunk = GpuChunkRows(p);
    OP_REQUIRES_OK(ctx, ctx->allocate_temp(tensorflow::DT_FLOAT, TensorShape({chunk * cw}),
                                           &col_t));
    float* col = col_t.flat<float>().data();
    const T* x = input.flat<T>().data();
    const T* off = offset.flat<T>().data();
    const T* m = p.use_mask ? mask.flat<T>().data() : nullptr;
    const int64_t kcg = p.kernel_points() * p.group_channels(), coutg = p.group_out_channels();
    for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
      const int64_t n = std::min(chunk, rows - r0);
      OP_REQUIRES_OK(ctx, LaunchStatus(deform_gpu::Im2Col<T>(d, p, x, off, m, r0, n, col),
                                       "Im2Col"));
      for (int64_t g = 0; g < p.groups; ++g) {
        OP_REQUIRES_OK(ctx, LaunchStatus(
            deform_gpu::Gemm(d, n, coutg, kcg, col + g * kcg, cw, false, w + g * coutg, cout,
                             false, 0.0f, out + r0 * cout + g * coutg, cout), "Gemm"));
      }
    }
    if (b != nullptr) {
      OP_REQUIRES_OK(ctx, LaunchStatus(deform_gpu::AddBias(d, b, rows, cout, out), "AddBias"));
    }
    OP_REQUIRES_OK(ctx, StoreTarget<T>(ctx, out, output));
  }
};

template <typename T>
class DeformConv2dGradGpuOp : public DeformConvBase {
 public:
  explicit DeformConv2dGradGpuOp(OpKernelConstruction* ctx) : DeformConvBase(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor &input = ctx->input(0), &offset = ctx->input(1), &mask = ctx->input(2),
                 &weight = ctx->input(3), &grad_output = ctx->input(4);
    DeformConvParams p;
    OP_REQUIRES_OK(ctx, Check(input, offset, mask, weight, nullptr, &p));
    const TensorShape out_shape({p.batch, p.out_height, p.out_width, p.out_channels});
    OP_REQUIRES(ctx, grad_output.shape() == out_shape,
                InvalidArgument("grad_output must have shape ", out_shape.DebugString(),
                                ", got ", grad_output.shape().DebugString()));
    Tensor *gx_t, *goff_t, *gm_t, *gw_t, *gb_t;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, input.shape(), &gx_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, offset.shape(), &goff_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, mask.shape(), &gm_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(3, weight.shape(), &gw_t));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(
                            4, TensorShape({p.use_bias ? p.out_channels : 0}), &gb_t));
    const GpuDevice& d = ctx->eigen_device<GpuDevice>();
    Tensor w_tmp, go_tmp, gx_tmp, gw_tmp, gb_tmp, col_t, gcol_t;
    const float *w, *go;
    float *gx, *gw, *gb;
    OP_REQUIRES_OK(ctx, FloatData<T>(ctx, weight, &w_tmp, &w));
    OP_REQUIRES_OK(ctx, FloatData<T>(ctx, grad_output, &go_tmp, &go));
    OP_REQUIRES_OK(ctx, FloatTarget<T>(ctx, gx_t, &gx_tmp, &gx));
    OP_REQUIRES_OK(ctx, FloatTarget<T>(ctx, gw_t, &gw_tmp, &gw));
    OP_REQUIRES_OK(ctx, FloatTarget<T>(ctx, gb_t, &gb_tmp, &gb));
    OP_REQUIRES_OK(ctx, LaunchStatus(deform_gpu::Fill(d, gx, gx_t->NumElements(), 0.0f), "Fill"));
    OP_REQUIRES_OK(ctx, LaunchStatus(deform_gpu::Fill(d, gw, gw_t->NumElements(), 0.0f), "Fill"));
    OP_REQUIRES_OK(ctx, LaunchStatus(deform_gpu::Fill(d, gb, gb_t->NumElements(), 0.0f), "Fill"));
    const int64_t rows = p.rows(), cout = p.out_channels, cw = p.col_width();
    if (rows > 0 && cout > 0) {
      const int64_t chunk = GpuChunkRows(p);
      OP_REQUIRES_OK(ctx, ctx->allocate_temp(tensorflow::DT_FLOAT, TensorShape({chunk * cw}),
                                             &col_t));
      OP_REQUIRES_OK(ctx, ctx->allocate_temp(tensorflow::DT_FLOAT, TensorShape({chunk * cw}),
                                             &gcol_t));
      float* col = col_t.flat<float>().data();
      float* gcol = gcol_t.flat<float>().data();
      const T* x = input.flat<T>().data();
      const T* off = offset.flat<T>().data();
      const T* m = p.use_mask ? mask.flat<T>().data() : nullptr;
      T* goff = goff_t->flat<T>().data();
      T* gm = p.use_mask ? gm_t->flat<T>().data() : nullptr;
      const int64_t kcg = p.kernel_points() * p.group_channels(), coutg = p.group_out_channels();
      for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
        const int64_t n = std::min(chunk, rows - r0);
        OP_REQUIRES_OK(ctx, LaunchStatus(deform_gpu::Im2Col<T>(d, p, x, off, m, r0, n, col),
                                         "Im2Col"));
        for (int64_t g = 0; g < p.groups; ++g) {  // gcol = grad_output x weight^T
          OP_REQUIRES_OK(ctx, LaunchStatus(
              deform_gpu::Gemm(d, n, kcg, coutg, go + r0 * cout + g * coutg, cout, false,
                               w + g * coutg, cout, true, 0.0f, gcol + g * kcg, cw), "Gemm"));
        }
        OP_REQUIRES_OK(ctx, LaunchStatus(
            deform_gpu::CoordGrad<T>(d, p, x, off, m, gcol, r0, n, goff, gm), "CoordGrad"));
        OP_REQUIRES_OK(ctx, LaunchStatus(deform_gpu::Col2Im<T>(d, p, off, m, gcol, r0, n, gx),
                                         "Col2Im"));
        for (int64_t g = 0; g < p.groups; ++g) {  // grad_weight += columns^T x grad_output
          OP_REQUIRES_OK(ctx, LaunchStatus(
              deform_gpu::Gemm(d, kcg, coutg, n, col + g * kcg, cw, true,
                               go + r0 * cout + g * coutg, cout, false, 1.0f, gw + g * coutg,
                               cout), "Gemm"));
        }
        if (p.use_bias) {
          OP_REQUIRES_OK(ctx, LaunchStatus(deform_gpu::BiasGrad(d, go, r0, n, cout, gb),
                                           "BiasGrad"));
        }
      }
    }
    OP_REQUIRES_OK(ctx, StoreTarget<T>(ctx, gx, gx_t));
    OP_REQUIRES_OK(ctx, StoreTarget<T>(ctx, gw, gw_t));
    OP_REQUIRES_OK(ctx, StoreTarget<T>(ctx, gb, gb_t));
  }
};

#define KDET_REGISTER_DEFORM_GPU(T)                                                      \
  REGISTER_KERNEL_BUILDER(                                                               \
      Name("KdetDeformConv2d").Device(tensorflow::DEVICE_GPU).TypeConstraint<T>("T"),    \
      DeformConv2dGpuOp<T>);                                                             \
  REGISTER_KERNEL_BUILDER(                                                               \
      Name("KdetDeformConv2dGrad").Device(tensorflow::DEVICE_GPU).TypeConstraint<T>("T"),\
      DeformConv2dGradGpuOp<T>);

KDET_REGISTER_DEFORM_GPU(Eigen::half);
KDET_REGISTER_DEFORM_GPU(Eigen::bfloat16);
KDET_REGISTER_DEFORM_GPU(float);
#endif  // GOOGLE_CUDA

}  // namespace kdet

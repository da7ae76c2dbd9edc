// The state meProp's linear autograd functions (meprop::linear and meprop::unified_linear)
// keep from forward to backward, and the row-sparse weight-gradient layout both return.
#pragma once

#include <torch/autograd.h>

#include <optional>

namespace meprop {
namespace detail {

// What a backward reads back: the operands, the layer's settings, which gradients autograd
// asks for, and the shapes with the input's leading dimensions flattened.
struct LinearContext {
  at::Tensor input;   // (..., m)
  at::Tensor weight;  // (n, m)
  int64_t k;
  bool dense_bias, sparse_grad;
  bool need_input, need_weight, need_bias;
  int64_t batch, n, m;  // batch: rows of the flattened leading dimensions (m or it may be 0)
};

// In forward: keep what load_linear_context reads back.
inline void save_linear_context(torch::autograd::AutogradContext* ctx, const at::Tensor& input,
                                const at::Tensor& weight, const std::optional<at::Tensor>& bias, int64_t k,
                                bool dense_bias, bool sparse_grad) {
  ctx->save_for_backward({input, weight});
  ctx->saved_data["k"] = k;
  ctx->saved_data["dense_bias"] = dense_bias;
  ctx->saved_data["sparse_grad"] = sparse_grad;
  ctx->saved_data["has_bias"] = bias.has_value() && bias->defined();
}

// In backward: the context save_linear_context kept.
inline LinearContext load_linear_context(torch::autograd::AutogradContext* ctx) {
  auto saved = ctx->get_saved_variables();
  LinearContext c;
  c.input = saved[0];
  c.weight = saved[1];
  c.k = ctx->saved_data["k"].toInt();
  c.dense_bias = ctx->saved_data["dense_bias"].toBool();
  c.sparse_grad = ctx->saved_data["sparse_grad"].toBool();
  c.need_input = ctx->needs_input_grad(0);
  c.need_weight = ctx->needs_input_grad(1);
  c.need_bias = ctx->saved_data["has_bias"].toBool() && ctx->needs_input_grad(2);
  c.n = c.weight.size(0);
  c.m = c.weight.size(1);
  c.batch = 1;
  for (int64_t d = 0; d + 1 < c.input.dim(); ++d) c.batch *= c.input.size(d);
  return c;
}

// The (n, m) weight gradient as a coalesced COO tensor of its rows row_index (U,) (sorted
// unique) holding rows (U, m): sparse_grad=True's layout. Differentiable in rows.
inline at::Tensor row_sparse_of(const at::Tensor& row_index, const at::Tensor& rows, at::IntArrayRef sizes) {
  return at::sparse_coo_tensor(row_index.unsqueeze(0), rows, sizes, rows.options().layout(at::kSparse), true);
}

// The same from a dense (n, m) gradient `full`, keeping the rows row_index (all of them
// without a copy). Not Tensor::to_sparse(1): that finds the nonzero rows by comparing whole
// rows (about a second at (500, 784)), and a touched row may be all zero.
inline at::Tensor row_sparse(const at::Tensor& full, const at::Tensor& row_index) {
  const at::Tensor rows = row_index.numel() == full.size(0) ? full : full.index_select(0, row_index);
  return row_sparse_of(row_index, rows, full.sizes());
}

}  // namespace detail
}  // namespace meprop

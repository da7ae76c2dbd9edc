// Shared by every meprop kernel source: includes, the vector-clone and inline attributes,
// the formulation codes of the per-example linear backward, the dense decision (is_sparse)
// and the entry checks of the linear backward ops.
//
// Vectorisation: the hot loops are plain C++ that GCC auto-vectorises at -O3; on x86-64
// with GCC they are compiled for x86-64-v4 (AVX-512), x86-64-v3 (AVX2+FMA) and the
// baseline with `target_clones`, and the loader picks one at run time (ifunc), so the
// built library runs on any x86-64 CPU (no -march=native). A function carrying
// MEPROP_CLONES is defined in exactly one .cpp file and declared in a header.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(MEPROP_NO_CLONES)
#define MEPROP_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define MEPROP_CLONES
#endif
#define MEPROP_INLINE inline __attribute__((always_inline))

namespace meprop {
namespace detail {

// Codes in the order of meprop.kernels.FORMULATIONS.
enum Formulation : int64_t {
  kGather = 0, kMaskedGemm = 1, kDense = 2, kPytorch = 3, kUnified = 4, kMaskedDense = 5, kNumFormulations = 6
};

// Counts one linear backward run by `code` (linear_backward.cpp).
void note_formulation(int64_t code);

// Whether keeping k of the n entries of each of `rows` rows drops anything (k < n, rows > 0);
// otherwise meProp's backward is the dense one. The decision of every op and row selection;
// its Python twin is meprop.selection.is_sparse.
MEPROP_INLINE bool is_sparse(int64_t k, int64_t n, int64_t rows) { return k < n && rows > 0; }

// The formulations the per-example backward ops take, by name and by code ("auto", -1: the
// cost model's choice), as meprop.dispatch.KERNEL_CODES names them.
struct OpFormulation {
  const char* name;
  int64_t code;
};
constexpr OpFormulation kOpFormulations[] = {
    {"auto", -1}, {"gather", kGather}, {"masked_gemm", kMaskedGemm}, {"masked_dense", kMaskedDense}};

// "a, b, c or d" of the accepted formulations, each written by `item` (for the messages).
template <typename Item>
std::string accepted_formulations(const Item& item) {
  constexpr size_t count = sizeof(kOpFormulations) / sizeof(kOpFormulations[0]);
  std::string out;
  for (size_t i = 0; i < count; ++i)
    out += (i == 0 ? "" : i + 1 == count ? " or " : ", ") + item(kOpFormulations[i]);
  return out;
}

// The code of the formulation `name`; an error naming `op` and the accepted names otherwise.
inline int64_t formulation_code(const char* op, c10::string_view name) {
  for (const auto& f : kOpFormulations)
    if (name == f.name) return f.code;
  TORCH_CHECK(false, op, ": formulation must be ",
              accepted_formulations([](const OpFormulation& f) { return "'" + std::string(f.name) + "'"; }),
              ", got ", name);
  return -1;
}

// Refuses a formulation code the ops do not take (meprop::linear's integer argument).
inline void check_formulation_code(const char* op, int64_t code) {
  for (const auto& f : kOpFormulations)
    if (code == f.code) return;
  TORCH_CHECK(false, op, ": formulation must be ", accepted_formulations([](const OpFormulation& f) {
                return std::to_string(f.code) + " (" + f.name + ")";
              }),
              ", got ", code);
}

// The entry checks of a per-example linear backward op (`op` in the messages): dy (B, n),
// x (B, m), weight (n, m), 2-D CPU tensors of one dtype, and k >= 1 (k > n keeps every entry).
// What runs below an op's entry trusts them: its loops index by these shapes.
inline void check_backward_operands(const char* op, const at::Tensor& dy, const at::Tensor& x,
                                    const at::Tensor& weight, int64_t k) {
  TORCH_CHECK(dy.dim() == 2 && x.dim() == 2 && weight.dim() == 2, op,
              ": dy (B, n), x (B, m), weight (n, m) must be 2-D");
  TORCH_CHECK(dy.device().is_cpu() && x.device().is_cpu() && weight.device().is_cpu(), op, ": CPU tensors only");
  TORCH_CHECK(x.size(0) == dy.size(0) && weight.size(0) == dy.size(1) && weight.size(1) == x.size(1), op,
              ": shapes do not match: dy ", dy.sizes(), ", x ", x.sizes(), ", weight ", weight.sizes());
  TORCH_CHECK(dy.scalar_type() == x.scalar_type() && dy.scalar_type() == weight.scalar_type(), op,
              ": dy, x and weight must share one dtype");
  TORCH_CHECK(k >= 1, op, ": k must be >= 1, got ", k);
}

// The cost model's formulation (kGather or kMaskedGemm) of a per-example backward of dy (batch, n),
// weight (n, m), k kept per row (linear_backward.cpp).
int64_t choose_formulation(int64_t batch, int64_t n, int64_t m, int64_t k);

// grad_input, the weight-gradient rows and (sparse_bias) the bias gradient from `kept` (B, n),
// the output gradient with every entry but the kept ones zero (linear_backward.cpp).
void masked_gemms(const at::Tensor& kept, const at::Tensor& x, const at::Tensor& weight, const at::Tensor& row_index,
                  bool masked_dense, bool need_input, bool need_weight, bool sparse_bias, bool dense_weight,
                  at::Tensor& grad_input, at::Tensor& rows, at::Tensor& grad_bias);

}  // namespace detail
}  // namespace meprop

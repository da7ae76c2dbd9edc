// Shared by every meprop kernel source: includes, the vector-clone and inline attributes,
// and the formulation codes of the per-example linear backward.
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

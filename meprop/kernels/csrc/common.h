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

}  // namespace detail
}  // namespace meprop

// AMX bfloat16 tiles for the fast numeric mode on x86 CPUs that have them (Intel Sapphire Rapids
// and later): a packed bfloat16 dense layer (cpu/dense.h) over up to 16 rows whose inputs are
// already bfloat16. A tile product C += A B multiplies bfloat16 pairs exactly and sums in float32
// (inputs that are bfloat16 subnormals count as zero), so its results differ from the float32
// kernel's on the same rounded inputs only by the order of the float32 sums. Elsewhere (other
// CPUs, other architectures, an OS that refuses the tile state) amx_available() is false and the
// callers use dense_forward with rounded inputs, the same arithmetic.
#pragma once

#include <cstddef>
#include <cstdint>

#include "cpu/dense.h"

namespace mpd::cpu {

// Whether this CPU and OS run AMX bfloat16 tiles in this process (asks the OS once, the first call).
bool amx_available();

// Whether amx_dense takes this layer: packed in bfloat16 pairs, inputs a multiple of 32.
bool amx_fits(const PackedDense& layer);

// For each batch b < batches (1 or 2, sharing every weight tile): y[b][r, :] = a[b][r] W^T + bias
// for r < rows (1..16): a row's layer.in bfloat16 inputs are the bits at a[b] + r lda (lda in
// elements; rows may overlap, as a convolution's windows do); y[b]: [rows, ldy] with
// ldy >= out_padded, every padded column written (zero past out). Needs amx_available() and
// amx_fits(layer).
void amx_dense(const PackedDense& layer, int batches, const uint16_t* const* a, size_t lda, int rows,
               float* const* y, size_t ldy);

// dst[e] = the bits of src[e] rounded to bfloat16 (math/bf16.h) for e < n.
void to_bf16(const float* src, size_t n, uint16_t* dst);

}  // namespace mpd::cpu

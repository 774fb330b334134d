// AMX bfloat16 tiles; see amx.h.
#include "cpu/amx.h"

#include <cstdlib>
#include <cstring>

#include "math/bf16.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && defined(__linux__)
#define MPD_AMX 1
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace mpd::cpu {

void to_bf16(const float* src, size_t n, uint16_t* dst) {
  for (size_t e = 0; e < n; ++e) {  // bf16_round_bits is branch-free: the loop vectorizes
    uint32_t bits;
    std::memcpy(&bits, src + e, sizeof bits);
    dst[e] = static_cast<uint16_t>(math::bf16_round_bits(bits) >> 16);
  }
}

bool amx_fits(const PackedDense& layer) { return layer.bf16 && layer.in % 32 == 0 && kPanel % 16 == 0; }

#if defined(MPD_AMX)

namespace {

constexpr long kArchReqXcompPerm = 0x1023;  // arch_prctl: ask for an extended state component
constexpr long kXfeatureTileData = 18;      // the AMX tile data

bool detect() {
  const char* off = std::getenv("MPDIFFUSER_NO_AMX");  // set (to anything but "" or "0"): the vector kernel instead
  if (off != nullptr && off[0] != '\0' && std::strcmp(off, "0") != 0) return false;
  unsigned eax, ebx, ecx, edx;
  __asm__ volatile("cpuid" : "=a"(eax), "=b"(ebx), "=c"(ecx), "=d"(edx) : "a"(7), "c"(0));
  const bool amx_bf16 = (edx >> 22) & 1u, amx_tile = (edx >> 24) & 1u;
  if (!amx_bf16 || !amx_tile) return false;
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureTileData) == 0;
}

// The tile configuration (palette 1): tiles 0-3 accumulate C (rows x 16 floats; tile 2 b + t:
// batch b, column tile t), tiles 4-5 hold A (rows x 32 bfloat16; batch b), tiles 6-7 B (16 pairs
// x 16 columns; column tile t).
struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

}  // namespace

bool amx_available() {
  static const bool available = detect();
  return available;
}

__attribute__((target("amx-tile,amx-bf16"))) void amx_dense(const PackedDense& layer, int batches,
                                                            const uint16_t* const* a, size_t lda, int rows,
                                                            float* const* y, size_t ldy) {
  TileConfig config;
  for (int t = 0; t < 8; ++t) {
    config.colsb[t] = 64;
    config.rows[t] = static_cast<uint8_t>(t < 6 ? rows : 16);
  }
  _tile_loadconfig(&config);
  const bool two = batches > 1;
  const int chunks = layer.in / 32;
  const size_t panel_words = static_cast<size_t>(layer.in / 2) * kPanel;  // a panel's [in / 2][kPanel] words
  const size_t b_stride = static_cast<size_t>(kPanel) * sizeof(float);    // bytes between a tile's pair rows
  const size_t a_stride = lda * sizeof(uint16_t);
  alignas(64) float c[2][16][32];
  const int column_tiles = layer.out_padded / 16;
  for (int t0 = 0; t0 < column_tiles; t0 += 2) {
    const bool pair = t0 + 1 < column_tiles;  // a second column tile in this pass
    // Column tile t is columns 16 t .. 16 t + 15: panel 16 t / kPanel, at word (16 t) % kPanel.
    const float* b[2];
    for (int i = 0; i < 2; ++i) {
      const int column = 16 * (pair || i == 0 ? t0 + i : t0);
      b[i] = layer.panels.get() + static_cast<size_t>(column / kPanel) * panel_words + column % kPanel;
    }
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    for (int k = 0; k < chunks; ++k) {
      const size_t at = static_cast<size_t>(k) * 16 * kPanel;  // 16 pair rows of the panel per chunk
      _tile_loadd(4, a[0] + static_cast<size_t>(k) * 32, a_stride);
      if (two) _tile_loadd(5, a[1] + static_cast<size_t>(k) * 32, a_stride);
      _tile_loadd(6, b[0] + at, b_stride);
      _tile_dpbf16ps(0, 4, 6);
      if (two) _tile_dpbf16ps(2, 5, 6);
      if (pair) {
        _tile_loadd(7, b[1] + at, b_stride);
        _tile_dpbf16ps(1, 4, 7);
        if (two) _tile_dpbf16ps(3, 5, 7);
      }
    }
    _tile_stored(0, &c[0][0][0], sizeof c[0][0]);
    if (pair) _tile_stored(1, &c[0][0][16], sizeof c[0][0]);
    if (two) {
      _tile_stored(2, &c[1][0][0], sizeof c[1][0]);
      if (pair) _tile_stored(3, &c[1][0][16], sizeof c[1][0]);
    }
    const int columns = pair ? 32 : 16, first = 16 * t0;
    const float* bias = layer.bias.get() + first;
    for (int bt = 0; bt < batches; ++bt) {
      for (int r = 0; r < rows; ++r) {
        float* yr = y[bt] + static_cast<size_t>(r) * ldy + first;
        for (int j = 0; j < columns; ++j) yr[j] = c[bt][r][j] + bias[j];
      }
    }
  }
  _tile_release();
}

#else

bool amx_available() { return false; }

void amx_dense(const PackedDense&, int, const uint16_t* const*, size_t, int, float* const*, size_t) {}

#endif

}  // namespace mpd::cpu

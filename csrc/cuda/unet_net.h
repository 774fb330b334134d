// The unet family's network description for the CUDA plan kernel (cuda/unet.cuh runs it): plain
// structs of pointers and sizes, and the host function that builds one from a model file's tensors
// wherever they live (the backend's device arena; host memory in tests/cpp/cuda_unet_emulation_test.cpp,
// which runs the kernel's U-Net code on the CPU against CpuUnet). No CUDA types.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "cuda/layout.h"
#include "format/model_file.h"
#include "math/bf16.h"

namespace mpd::cuda {

struct DevLinear {
  const float* w;  // [in, out] (transposed from the file's [out, in]: a warp's outputs read one row)
  const float* b;  // [out]
  int in, out;
};

struct DevConv {
  const float* w;  // [kernel, in, out] (repacked from the file's [out, in, kernel]; the up convolution's
                   // [in, out, 4] likewise): the outputs of neighbouring threads are neighbouring floats
  const float* b;  // [out]
  int in, out, kernel;
  const uint16_t* wh;  // w's bfloat16 bits, same layout, when every weight is a bfloat16 value (a
                       // stride-1 convolution of a file exported with bf16 weights), else null
};

struct DevFilmConv {
  DevConv conv;
  const float* gamma;  // GroupNorm affine [out]
  const float* beta;
  DevLinear film0, film2;  // context -> context (SiLU) -> [scale, shift]
  int film_at;             // its [scale (out), shift (out)] within a FiLM row (unet_films)
};

struct DevBlock {
  DevFilmConv first, second;
  int has_skip;
  DevConv skip;  // kernel 1 when the channel count changes
};

// One network (planner or dynamics model) with device pointers into the backend's arena; lives in
// device memory (the kernel's parameters hold a pointer to it).
struct DevUnet {
  int horizon, in_channels, out_channels, dim, embed, levels, cond_dim;
  DevLinear time0, time2, embeds[2][2];
  DevBlock down0[kMaxUnetLevels], down1[kMaxUnetLevels];
  DevConv down[kMaxUnetLevels];  // levels - 1
  DevBlock mid0, mid1;
  DevBlock up0[kMaxUnetLevels], up1[kMaxUnetLevels];
  DevConv up[kMaxUnetLevels];  // levels - 1
  DevConv head0, head3;
  const float* head_gamma;
  const float* head_beta;
  int film_floats;      // a FiLM row: every FiLM layer's [scale, shift], in the order of the forward pass
  UnetScratch scratch;  // one group's scratch for kUnetRows rows
};

// Whether `name` is a convolution's weight the tensor cores may read ([out, in, K], not the
// transposed up convolution's).
inline bool unet_tensor_conv(const NamedTensor& t) {
  const std::string& name = t.name;
  const bool up = name.size() > 9 && name.find(".up.") != std::string::npos &&
                  name.compare(name.size() - 9, 9, ".2.weight") == 0;
  return t.shape.size() == 3 && !up;
}

// Appends the unet family's planner and dynamics tensors to `image` (each on a 128-byte boundary)
// in the layouts the kernel reads: a linear layer's [out, in] as [in, out]; a convolution's
// [out, in, K] as [K, in, out]; the transposed up convolution's [in, out, 4] as [4, in, out];
// vectors as stored. Records each tensor's offset by name in `at`. When every convolution weight
// of both networks is a bfloat16 value (a file exported with bf16 weights), also each
// convolution's bfloat16 bits in the same layout (two per float, "<name>#bf16"), for the tensor
// cores of the fast numeric mode, and returns true.
inline bool append_unet_tensors(const ModelFile& file, std::vector<float>* image,
                                std::vector<std::pair<std::string, size_t>>* at) {
  bool bf16 = !file.planner_unet.empty();
  for (const std::vector<NamedTensor>* tensors : {&file.planner_unet, &file.dynamics_unet}) {
    for (const NamedTensor& t : *tensors) {
      if (!unet_tensor_conv(t)) continue;
      for (float v : t.data) bf16 = bf16 && math::bf16_round(v) == v;
    }
  }
  for (const std::vector<NamedTensor>* tensors : {&file.planner_unet, &file.dynamics_unet}) {
    for (const NamedTensor& t : *tensors) {
      image->resize((image->size() + 31) / 32 * 32, 0.0f);
      at->emplace_back(t.name, image->size());
      const std::vector<int64_t>& d = t.shape;
      const size_t begin = image->size();
      image->resize(begin + t.data.size());
      float* out = image->data() + begin;
      const bool up = t.name.size() > 9 && t.name.find(".up.") != std::string::npos &&
                      t.name.compare(t.name.size() - 9, 9, ".2.weight") == 0;
      if (d.size() == 2) {  // [out, in] -> [in, out]
        for (int64_t o = 0; o < d[0]; ++o) {
          for (int64_t i = 0; i < d[1]; ++i) out[i * d[0] + o] = t.data[static_cast<size_t>(o * d[1] + i)];
        }
      } else if (d.size() == 3 && up) {  // [in, out, 4] -> [4, in, out]
        for (int64_t i = 0; i < d[0]; ++i) {
          for (int64_t o = 0; o < d[1]; ++o) {
            for (int64_t j = 0; j < d[2]; ++j) {
              out[(j * d[0] + i) * d[1] + o] = t.data[static_cast<size_t>((i * d[1] + o) * d[2] + j)];
            }
          }
        }
      } else if (d.size() == 3) {  // [out, in, K] -> [K, in, out]
        for (int64_t o = 0; o < d[0]; ++o) {
          for (int64_t i = 0; i < d[1]; ++i) {
            for (int64_t j = 0; j < d[2]; ++j) {
              out[(j * d[1] + i) * d[0] + o] = t.data[static_cast<size_t>((o * d[1] + i) * d[2] + j)];
            }
          }
        }
      } else {
        std::copy(t.data.begin(), t.data.end(), out);
      }
      if (bf16 && unet_tensor_conv(t)) {  // the repacked floats' bfloat16 bits
        const size_t n = t.data.size();
        image->resize((image->size() + 31) / 32 * 32, 0.0f);
        at->emplace_back(t.name + "#bf16", image->size());
        const size_t half_at = image->size();
        image->resize(half_at + (n + 1) / 2, 0.0f);
        const float* repacked = image->data() + begin;
        for (size_t e = 0; e < n; ++e) {
          const uint16_t bits = math::bf16_bits(repacked[e]);
          std::memcpy(reinterpret_cast<char*>(image->data() + half_at) + 2 * e, &bits, sizeof bits);
        }
      }
    }
  }
  return bf16;
}

// The DevUnet of network `net` ("planner" or "dynamics") with pointers into the arena `a`, by
// the tensor names of the PyTorch module (cpu/unet.cpp builds its CpuUnet from the same names).
inline bool device_unet(const ModelConfig& c, const std::string& net, const std::vector<std::pair<std::string, size_t>>& at,
                 const float* a, const UnetScratch& scratch, DevUnet* u) {
  bool ok = true;
  auto find = [&](const std::string& name) -> const float* {
    for (const auto& entry : at) {
      if (entry.first == name) return a + entry.second;
    }
    ok = false;
    return nullptr;
  };
  const std::string p = net + ".";
  auto linear = [&](const std::string& name, int in, int out) {
    return DevLinear{find(name + ".weight"), find(name + ".bias"), in, out};
  };
  auto conv = [&](const std::string& name, int in, int out, int kernel) {
    DevConv d{find(name + ".weight"), find(name + ".bias"), in, out, kernel, nullptr};
    for (const auto& entry : at) {
      if (entry.first == name + ".weight#bf16") d.wh = reinterpret_cast<const uint16_t*>(a + entry.second);
    }
    return d;
  };
  const int context = c.unet_dim + 2 * c.unet_embed_dim;
  int film_floats = 0;  // the FiLM layers are made in the order of the forward pass
  auto film_conv = [&](const std::string& name, int in, int out) {
    const DevFilmConv f{conv(name + ".conv", in, out, 5), find(name + ".norm.weight"), find(name + ".norm.bias"),
                        linear(name + ".film.0", context, context), linear(name + ".film.2", context, 2 * out),
                        film_floats};
    film_floats += round4(2 * out);
    return f;
  };
  auto block = [&](const std::string& name, int in, int out) {
    DevBlock b{film_conv(name + ".first", in, out), film_conv(name + ".second", out, out), in != out, {}};
    if (b.has_skip) b.skip = conv(name + ".skip", in, out, 1);
    return b;
  };
  *u = DevUnet{};
  const int levels = static_cast<int>(c.unet_mults.size()), dim = c.unet_dim, embed = c.unet_embed_dim;
  u->horizon = c.horizon;
  u->in_channels = c.window_dim();
  u->out_channels = net == "planner" ? c.window_dim() : c.state_dim;
  u->dim = dim;
  u->embed = embed;
  u->levels = levels;
  u->cond_dim = c.cond_dim;
  u->time0 = linear(p + "time.0", dim, 4 * dim);
  u->time2 = linear(p + "time.2", 4 * dim, dim);
  const int condition_dims[2] = {c.state_dim, c.cond_dim};
  for (int i = 0; i < 2; ++i) {
    u->embeds[i][0] = linear(p + "embeds." + std::to_string(i) + ".0", condition_dims[i], 4 * embed);
    u->embeds[i][1] = linear(p + "embeds." + std::to_string(i) + ".2", 4 * embed, embed);
  }
  int channels = u->in_channels;
  for (int i = 0; i < levels; ++i) {
    const int d = dim * c.unet_mults[static_cast<size_t>(i)];
    const std::string level = p + "down." + std::to_string(i) + ".";
    u->down0[i] = block(level + "0", channels, d);
    u->down1[i] = block(level + "1", d, d);
    if (i + 1 < levels) u->down[i] = conv(level + "2.conv", d, d, 3);
    channels = d;
  }
  u->mid0 = block(p + "middle.0", channels, channels);
  u->mid1 = block(p + "middle.1", channels, channels);
  for (int j = 0; j + 1 < levels; ++j) {
    const int d = dim * c.unet_mults[static_cast<size_t>(levels - 2 - j)];
    const int skip = dim * c.unet_mults[static_cast<size_t>(levels - 1 - j)];
    const std::string level = p + "up." + std::to_string(j) + ".";
    u->up0[j] = block(level + "0", channels + skip, d);
    u->up1[j] = block(level + "1", d, d);
    u->up[j] = conv(level + "2", d, d, 4);
    channels = d;
  }
  u->head0 = conv(p + "head.0", channels, dim, 5);
  u->head_gamma = find(p + "head.1.weight");
  u->head_beta = find(p + "head.1.bias");
  u->head3 = conv(p + "head.3", dim, u->out_channels, 1);
  u->film_floats = film_floats;
  u->scratch = scratch;
  return ok;
}

}  // namespace mpd::cuda

// The host side of the CUDA backend's memory: one arena holding every network's weights (the
// MLPs' layers transposed and zero-padded to 16-byte rows, the unet family's tensors as stored),
// the steps' floats, the step embeddings, the CDF tables, then the plan buffers; and the kernels'
// parameters pointing into it. make_backend (sampler.cu) copies the arena to the device;
// tests/cpp/cuda_kernel_emulation_test.cpp keeps it in host memory and runs the plan kernel on the
// CPU. Included by one translation unit each (after cuda/plan_kernel.cuh).
#pragma once

#include <algorithm>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "cuda/plan_kernel.cuh"
#include "format/model_file.h"

namespace mpd::cuda {
namespace {

struct Arena {
  std::vector<float> image;   // the arena's initialized head: weights, steps, embeddings, CDF tables
  std::vector<double> norms;  // the file's state mid, half; action mid, half
  size_t total = 0;           // floats of the whole arena: the image, then the plan buffers
  size_t steps_at = 0, emb_at = 0, quantiles_at = 0, pinned_at = 0, windows_at = 0, values_at = 0, costs_at = 0;
  size_t host_state_at = 0, host_actions_at = 0, host_index_at = 0, host_values_at = 0, host_costs_at = 0;
  size_t host_windows_at = 0, host_warm_at = 0, host_window_at = 0, unets_at = 0, unet_scratch_at = 0;
  size_t unet_films_at = 0, arrivals_at = 0, exchange_at = 0;
  std::vector<size_t> offsets;  // per MLP and layer: weight offset, bias offset
  std::vector<std::pair<std::string, size_t>> unet_at;  // the unet family: tensor name -> offset
  UnetScratch unet_layout{};  // the unet family: one candidate's scratch
  int ld_films = 0;           // the unet family: a FiLM row's floats (padded)
  int ld_exchange = 0;        // the mlp family: the widest planner or dynamics layer output (padded)
  bool unet = false;
};

// The arena of a model for up to max_candidates candidates; false for a model this backend does
// not run (an MLP of more than kMaxDense layers, a U-Net of more than kMaxUnetLevels levels).
bool build_arena(const ModelFile& file, int max_candidates, Arena* out) {
  const ModelConfig& c = file.config;
  const MlpWeights* nets[4] = {&file.planner, &file.dynamics, &file.reward, &file.cost};
  const int num_nets = c.has_cost ? 4 : 3;
  for (int i = 0; i < num_nets; ++i) {
    if (static_cast<int>(nets[i]->layers.size()) > kMaxDense) return false;
  }
  if (c.unet_mults.size() > static_cast<size_t>(kMaxUnetLevels)) return false;
  Arena& ar = *out;
  const int H = c.horizon, D = c.window_dim(), HD = H * D, K = c.num_steps;
  std::vector<float>& image = ar.image;
  auto align = [&image] { image.resize((image.size() + 31) / 32 * 32, 0.0f); };  // 128-byte rows
  for (int i = 0; i < num_nets; ++i) {
    for (const DenseWeights& layer : nets[i]->layers) {
      align();
      ar.offsets.push_back(image.size());
      for (int r = 0; r < round4(layer.in); ++r) {  // [round4(in), round4(out)], zero padded
        for (int j = 0; j < round4(layer.out); ++j) {
          image.push_back(r < layer.in && j < layer.out ? layer.weight[static_cast<size_t>(j) * layer.in + r] : 0.0f);
        }
      }
      align();
      ar.offsets.push_back(image.size());
      image.insert(image.end(), layer.bias.begin(), layer.bias.end());
    }
  }
  // The unet family's planner and dynamics tensors, repacked for the kernel (unet_net.h), by name.
  ar.unet = c.architecture == MPD_ARCH_UNET;
  const bool tensor_cores = append_unet_tensors(file, &image, &ar.unet_at);
  if (ar.unet) {
    UnetShape shape{H, D, D, c.unet_dim, c.unet_embed_dim, static_cast<int>(c.unet_mults.size()), {}};
    for (size_t i = 0; i < c.unet_mults.size(); ++i) shape.mults[i] = c.unet_mults[i];
    ar.unet_layout = unet_scratch(shape, kUnetRows, tensor_cores);  // the planner's: D >= dx outputs
  }
  align();
  ar.steps_at = image.size();
  for (int k = 1; k <= K; ++k) {
    const math::StepFloats f = math::step_floats(k, K, c.prediction == MPD_PREDICT_SAMPLE);
    static_assert(sizeof(math::StepFloats) == 6 * sizeof(float), "StepFloats is five floats and an int");
    float as_floats[6];
    std::memcpy(as_floats, &f, sizeof f);
    image.insert(image.end(), as_floats, as_floats + 6);
  }
  align();
  ar.emb_at = image.size();
  image.resize(image.size() + static_cast<size_t>(K) * 32);
  for (int k = 1; k <= K; ++k) math::step_embedding(k, image.data() + ar.emb_at + static_cast<size_t>(k - 1) * 32);
  align();
  ar.quantiles_at = image.size();  // CDF tables: states [dx, Q], then actions [du, Q]
  image.insert(image.end(), file.state_quantiles.begin(), file.state_quantiles.end());
  image.insert(image.end(), file.action_quantiles.begin(), file.action_quantiles.end());
  align();
  ar.pinned_at = image.size();  // [dx]: 1 for a fixed state dimension (kept at x_0's value), else 0
  if (!c.fixed_state_dims.empty()) {
    image.resize(image.size() + static_cast<size_t>(c.state_dim), 0.0f);
    for (int j : c.fixed_state_dims) image[ar.pinned_at + static_cast<size_t>(j)] = 1.0f;
  }
  align();
  const size_t N = static_cast<size_t>(max_candidates);
  ar.windows_at = image.size();
  ar.values_at = ar.windows_at + N * HD;
  ar.costs_at = ar.values_at + N;
  ar.host_state_at = ar.costs_at + N;
  ar.host_actions_at = ar.host_state_at + round4(c.state_dim);
  ar.host_index_at = ar.host_actions_at + static_cast<size_t>(H) * c.action_dim;
  ar.host_values_at = ar.host_index_at + 4;
  ar.host_costs_at = ar.host_values_at + N;
  ar.host_windows_at = ar.host_costs_at + N;
  ar.host_warm_at = ar.host_windows_at + N * HD;
  ar.host_window_at = ar.host_warm_at + HD;
  // The unet family: its two DevUnet structs, every candidate's scratch, the plan's FiLM rows
  // [2 nets][K][2 kinds][ld_films] and the candidates' group barriers.
  ar.unets_at = (ar.host_window_at + HD + 31) / 32 * 32;
  ar.unet_scratch_at = ar.unets_at + (ar.unet ? (2 * sizeof(DevUnet) / sizeof(float) + 32) / 32 * 32 : 0);
  ar.unet_films_at = ar.unet_scratch_at + (ar.unet ? N * static_cast<size_t>(ar.unet_layout.total) : 0);
  if (ar.unet) {
    DevUnet probe;  // the FiLM row's size from the network description (its pointers unused)
    device_unet(c, "planner", ar.unet_at, image.data(), ar.unet_layout, &probe);
    ar.ld_films = (probe.film_floats + 31) / 32 * 32;
  }
  // Every candidate's group barrier, and the mlp family's exchange rows of a group's dense layers
  // (two sets of two rows of the widest planner or dynamics layer output).
  ar.arrivals_at = ar.unet_films_at + 4 * static_cast<size_t>(K) * ar.ld_films;
  if (!ar.unet) {
    for (int i = 0; i < 2; ++i) {
      for (const DenseWeights& layer : nets[i]->layers) ar.ld_exchange = std::max(ar.ld_exchange, round4(layer.out));
    }
  }
  ar.exchange_at = ar.arrivals_at + (N + 31) / 32 * 32;
  ar.total = ar.exchange_at + N * 4 * static_cast<size_t>(ar.ld_exchange);
  for (const auto* v : {&file.state_mid, &file.state_half, &file.action_mid, &file.action_half}) {
    ar.norms.insert(ar.norms.end(), v->begin(), v->end());
  }
  return true;
}

// The kernels' fixed parameters for the arena at `a` (device memory, or host memory in the CPU
// emulation) with the normalizers at `norms`, and the unet family's two DevUnet structs, which the
// caller copies to a + arena.unets_at. false: a unet tensor is missing (the reader checked: not reached).
bool arena_params(const ModelFile& file, const Arena& arena, float* a, const double* norms, PlanParams* out,
                  SelectParams* select, DevUnet unets[2]) {
  const ModelConfig& c = file.config;
  const MlpWeights* nets[4] = {&file.planner, &file.dynamics, &file.reward, &file.cost};
  const int num_nets = c.has_cost ? 4 : 3;
  const int H = c.horizon, D = c.window_dim(), HD = H * D, K = c.num_steps;
  PlanParams& p = *out;
  p = PlanParams{};
  DeviceMlp* device_nets[4] = {&p.planner, &p.dynamics, &p.reward, &p.cost};
  size_t o = 0;
  const int* dims[4] = {};
  int dense[4] = {};
  for (int i = 0; i < num_nets; ++i) {
    DeviceMlp& m = *device_nets[i];
    m.dense = static_cast<int>(nets[i]->layers.size());
    for (int l = 0; l < m.dense; ++l) {
      const DenseWeights& layer = nets[i]->layers[static_cast<size_t>(l)];
      m.weight[l] = a + arena.offsets[o++];
      m.bias[l] = a + arena.offsets[o++];
      m.dims[l] = layer.in;
      m.dims[l + 1] = layer.out;
    }
    dims[i] = m.dims;
    dense[i] = m.dense;
  }
  // The unet family's planner and dynamics take no MLP rows: their outputs [H, D] and [H, dx]
  // land in the eps rows, so the strides hold H D.
  const int unet_dims[2][2] = {{HD, HD}, {HD, H * c.state_dim}};
  if (arena.unet) {
    for (int i = 0; i < 2; ++i) {
      dims[i] = unet_dims[i];
      dense[i] = 1;
      if (!device_unet(c, i == 0 ? "planner" : "dynamics", arena.unet_at, a, arena.unet_layout, &unets[i])) {
        return false;
      }
    }
    p.unets = reinterpret_cast<const DevUnet*>(a + arena.unets_at);
    p.unet_scratch = a + arena.unet_scratch_at;
    p.unet_films = a + arena.unet_films_at;
    p.ld_films = arena.ld_films;
  }
  p.group_arrivals = reinterpret_cast<unsigned*>(a + arena.arrivals_at);
  p.mlp_exchange = a + arena.exchange_at;
  p.ld_exchange = arena.ld_exchange;
  const Strides strides = plan_strides(c.state_dim, c.action_dim, H, dims, dense, num_nets, !arena.unet);
  p.steps = reinterpret_cast<const math::StepFloats*>(a + arena.steps_at);
  p.embeddings = a + arena.emb_at;
  p.state_mid = norms;
  p.state_half = norms + c.state_dim;
  p.quantiles = c.quantiles;
  p.state_quantiles = a + arena.quantiles_at;
  p.pinned = c.fixed_state_dims.empty() ? nullptr : a + arena.pinned_at;
  p.windows = a + arena.windows_at;
  p.values = a + arena.values_at;
  p.costs = a + arena.costs_at;
  p.horizon = H;
  p.dx = c.state_dim;
  p.du = c.action_dim;
  p.cond_dim = c.cond_dim;
  p.num_steps = K;
  p.blocks_per_candidate = 1;
  p.reward_outputs = c.reward_outputs;
  p.has_cost = c.has_cost ? 1 : 0;
  p.ld_tau = strides.ld_tau;
  p.ld_in = strides.ld_in;
  p.ld_h = strides.ld_h;
  p.ld_out = strides.ld_out;
  p.ld_rin = strides.ld_rin;
  p.ld_rh = strides.ld_rh;
  p.ld_rout = strides.ld_rout;
  p.part_cols = strides.part_cols;

  SelectParams& s = *select;
  s = SelectParams{};
  s.windows = p.windows;
  s.values = p.values;
  s.costs = p.costs;
  s.state_mid = norms;
  s.state_half = norms + c.state_dim;
  s.action_mid = norms + 2 * c.state_dim;
  s.action_half = s.action_mid + c.action_dim;
  s.quantiles = c.quantiles;
  s.action_quantiles = a + arena.quantiles_at + file.state_quantiles.size();
  s.horizon = H;
  s.dx = c.state_dim;
  s.du = c.action_dim;
  return true;
}

}  // namespace
}  // namespace mpd::cuda

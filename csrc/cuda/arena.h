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
  size_t host_windows_at = 0, host_warm_at = 0, host_window_at = 0, arrivals_at = 0;
  size_t structs_at = 0;      // the family's device structs (arena_params returns their bytes)
  std::vector<size_t> offsets;  // per MLP and layer: weight offset, bias offset
  // The unet family's: its tensors by name, the candidates' scratch, its FiLM rows.
  std::vector<std::pair<std::string, size_t>> unet_at;  // tensor name -> offset
  size_t unet_scratch_at = 0, unet_films_at = 0;
  UnetScratch unet_layout{};  // one candidate's scratch (zero in the mlp family: no shared-memory tail)
  int ld_films = 0;           // a FiLM row's floats (padded)
  // The mlp family's: exchange rows of a group's dense layers.
  size_t exchange_at = 0;
  int ld_exchange = 0;        // the widest planner or dynamics layer output (padded)
  int prologue_floats = 0;    // shared memory of the family's prologue kernel (FamilyKernels::prologue)
};

// What a denoiser family keeps in the arena beyond what every family has (the dense layers of the
// MLPs in the file: the ranker's, and the mlp family's planner and dynamics model): `append` puts
// its weights in the image (false: a network this backend does not run); `reserve` its plan
// buffers from float `at` (returns their end); `params` sets its kernel parameters and gives the
// device structs to copy to structs_at (false: a tensor is missing). build_arena and arena_params
// call the model's family (family_arena) and name none.
struct FamilyArena {
  bool (*append)(const ModelFile& file, Arena* ar);
  size_t (*reserve)(const ModelFile& file, size_t N, size_t at, Arena* ar);
  bool (*params)(const ModelFile& file, const Arena& ar, float* a, PlanParams* p, std::vector<unsigned char>* structs);
  // Planner and dynamics model as dense layers through the kernel's shared-memory rows; else
  // they write only their outputs, [H, D] and [H, dx], into the eps rows.
  bool dense_diffusion;
};

// The mlp family: its networks are the file's MLPs (appended for every family); a group's blocks
// exchange their dense layers' outputs through rows of the widest layer.
const FamilyArena kMlpArena{
    [](const ModelFile&, Arena*) { return true; },
    [](const ModelFile& file, size_t N, size_t at, Arena* ar) {
      for (const MlpWeights* net : {&file.planner, &file.dynamics}) {
        for (const DenseWeights& layer : net->layers) ar->ld_exchange = std::max(ar->ld_exchange, round4(layer.out));
      }
      ar->exchange_at = at;  // two sets of two rows per candidate
      return at + N * 4 * static_cast<size_t>(ar->ld_exchange);
    },
    [](const ModelFile&, const Arena& ar, float* a, PlanParams* p, std::vector<unsigned char>*) {
      p->mlp_exchange = a + ar.exchange_at;
      p->ld_exchange = ar.ld_exchange;
      return true;
    },
    true};

// The unet family: its planner's and dynamics model's tensors repacked for the kernel (unet_net.h),
// by name; every candidate's scratch, the plan's FiLM rows [2 nets][K][2 kinds][ld_films] and the
// two DevUnet structs.
const FamilyArena kUnetArena{
    [](const ModelFile& file, Arena* ar) {
      const ModelConfig& c = file.config;
      if (c.unet_mults.size() > static_cast<size_t>(kMaxUnetLevels)) return false;
      const bool tensor_cores = append_unet_tensors(file, &ar->image, &ar->unet_at);
      UnetShape shape{c.horizon, c.window_dim(), c.window_dim(), c.unet_dim, c.unet_embed_dim,
                      static_cast<int>(c.unet_mults.size()), {}};
      for (size_t i = 0; i < c.unet_mults.size(); ++i) shape.mults[i] = c.unet_mults[i];
      ar->unet_layout = unet_scratch(shape, kUnetRows, tensor_cores);  // the planner's: D >= dx outputs
      ar->prologue_floats = unet_film_layout(ar->unet_layout, c.unet_dim, c.state_dim, c.cond_dim).total;
      return true;
    },
    [](const ModelFile& file, size_t N, size_t at, Arena* ar) {
      const ModelConfig& c = file.config;
      DevUnet probe;  // the FiLM row's size from the network description (its pointers unused)
      device_unet(c, "planner", ar->unet_at, ar->image.data(), ar->unet_layout, &probe);
      ar->ld_films = (probe.film_floats + 31) / 32 * 32;
      ar->structs_at = at;
      ar->unet_scratch_at = at + (2 * sizeof(DevUnet) / sizeof(float) + 32) / 32 * 32;
      ar->unet_films_at = ar->unet_scratch_at + N * static_cast<size_t>(ar->unet_layout.total);
      return ar->unet_films_at + 4 * static_cast<size_t>(c.num_steps) * ar->ld_films;
    },
    [](const ModelFile& file, const Arena& ar, float* a, PlanParams* p, std::vector<unsigned char>* structs) {
      DevUnet unets[2];
      for (int i = 0; i < 2; ++i) {
        if (!device_unet(file.config, i == 0 ? "planner" : "dynamics", ar.unet_at, a, ar.unet_layout, &unets[i])) {
          return false;
        }
      }
      const unsigned char* bytes = reinterpret_cast<const unsigned char*>(unets);
      structs->assign(bytes, bytes + sizeof unets);
      p->unets = reinterpret_cast<const DevUnet*>(a + ar.structs_at);
      p->unet_scratch = a + ar.unet_scratch_at;
      p->unet_films = a + ar.unet_films_at;
      p->ld_films = ar.ld_films;
      p->unet_split_work = kUnetSplitWork;
      return true;
    },
    false};

// The arena part of a model's denoiser family (ModelConfig::architecture), as family_kernels.
inline const FamilyArena& family_arena(int architecture) {
  return architecture == MPD_ARCH_UNET ? kUnetArena : kMlpArena;
}

// The arena of a model for up to max_candidates candidates; false for a model this backend does
// not run (an MLP of more than kMaxDense layers; a family's own limits, as a U-Net of more than
// kMaxUnetLevels levels).
bool build_arena(const ModelFile& file, int max_candidates, Arena* out) {
  const ModelConfig& c = file.config;
  const MlpWeights* nets[4] = {&file.planner, &file.dynamics, &file.reward, &file.cost};
  const int num_nets = c.has_cost ? 4 : 3;
  for (int i = 0; i < num_nets; ++i) {
    if (static_cast<int>(nets[i]->layers.size()) > kMaxDense) return false;
  }
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
  const FamilyArena& family = family_arena(c.architecture);
  if (!family.append(file, &ar)) return false;
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
  // Every candidate's group barrier, then the family's plan buffers.
  ar.arrivals_at = (ar.host_window_at + HD + 31) / 32 * 32;
  ar.total = family.reserve(file, N, ar.arrivals_at + (N + 31) / 32 * 32, &ar);
  for (const auto* v : {&file.state_mid, &file.state_half, &file.action_mid, &file.action_half}) {
    ar.norms.insert(ar.norms.end(), v->begin(), v->end());
  }
  return true;
}

// The kernels' fixed parameters for the arena at `a` (device memory, or host memory in the CPU
// emulation) with the normalizers at `norms`, and the family's device structs, which the caller
// copies to a + arena.structs_at. false: a tensor is missing (the reader checked: not reached).
bool arena_params(const ModelFile& file, const Arena& arena, float* a, const double* norms, PlanParams* out,
                  SelectParams* select, std::vector<unsigned char>* structs) {
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
  // A family whose planner and dynamics model are not dense layers writes only their outputs,
  // [H, D] and [H, dx], into the eps rows: the strides hold H D.
  const FamilyArena& family = family_arena(c.architecture);
  const int output_widths[2][2] = {{HD, HD}, {HD, H * c.state_dim}};
  for (int i = 0; i < 2 && !family.dense_diffusion; ++i) {
    dims[i] = output_widths[i];
    dense[i] = 1;
  }
  structs->clear();
  if (!family.params(file, arena, a, &p, structs)) return false;
  p.group_arrivals = reinterpret_cast<unsigned*>(a + arena.arrivals_at);
  const Strides strides = plan_strides(c.state_dim, c.action_dim, H, dims, dense, num_nets, family.dense_diffusion);
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

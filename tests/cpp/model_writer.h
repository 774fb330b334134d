// Writes small, valid mpdiffuser model files in memory for the C++ tests (and variants broken on
// purpose): the safetensors layout of csrc/format/model_file.h with deterministic random weights.
#pragma once

#include <cstdint>
#include <cmath>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include "format/model_file.h"  // mpd::unet_layout: the unet family's tensor list
#include "math/bf16.h"

namespace testing {

struct TinyModel {
  int state_dim = 3, action_dim = 2, horizon = 4, num_steps = 5, width = 24, layers = 2;
  int ranker_width = 16, ranker_layers = 2, reward_outputs = 2;
  bool has_cost = false;
  std::string prediction = "epsilon";  // "epsilon" or "sample"
  int quantiles = 0;                    // > 0: a CDF normalizer of this many quantiles per dimension
  bool unsorted_quantiles = false;      // swap two state quantiles (a broken file)
  uint32_t seed = 1;
  std::map<std::string, std::string> metadata_overrides;  // key -> value ("<erase>" removes it)
  std::string drop_tensor;                                // omit this tensor
  std::string extra_tensor;                               // add an unexpected [1] tensor
  std::string architecture = "mlp";                       // or "unet" (planner and dynamics)
  int unet_dim = 8, unet_embed_dim = 8;
  std::vector<int> unet_mults = {1, 2};
  std::string scaled_net;  // multiply every tensor of this network by `scale` (finite weights that overflow)
  float scale = 1.0f;
  bool bf16_values = false;  // every network tensor rounded to a bfloat16 value (an export with bf16 weights)
};

struct Tensor {
  std::vector<int64_t> shape;
  std::vector<float> data;
};

inline float next_uniform(uint32_t* state) {  // xorshift32 in [-1, 1)
  *state ^= *state << 13;
  *state ^= *state >> 17;
  *state ^= *state << 5;
  return static_cast<float>(*state) / 2147483648.0f - 1.0f;
}

inline void add_mlp(std::map<std::string, Tensor>* t, const std::string& net, int in, int width, int layers,
                    int out, uint32_t* rng) {
  for (int l = 0; l <= layers; ++l) {
    const int i = l == 0 ? in : width, o = l == layers ? out : width;
    Tensor w{{o, i}, std::vector<float>(static_cast<size_t>(o) * i)};
    const float scale = 1.0f / std::sqrt(static_cast<float>(i));
    for (float& v : w.data) v = next_uniform(rng) * scale * 1.7f;
    Tensor b{{o}, std::vector<float>(static_cast<size_t>(o))};
    for (float& v : b.data) v = next_uniform(rng) * 0.05f;
    (*t)[net + "." + std::to_string(l) + ".weight"] = w;
    (*t)[net + "." + std::to_string(l) + ".bias"] = b;
  }
}

inline std::string json_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out;
}

// The bytes of a model file for `m`.
inline std::vector<uint8_t> write_model(const TinyModel& m) {
  uint32_t rng = m.seed * 2654435761u + 1u;
  const int D = m.state_dim + m.action_dim, cond = m.has_cost ? 2 : 1;
  const int in = m.horizon * D + m.state_dim + cond + 32;
  std::map<std::string, Tensor> tensors;
  if (m.architecture == "unet") {
    mpd::ModelConfig c;
    c.state_dim = m.state_dim;
    c.action_dim = m.action_dim;
    c.cond_dim = cond;
    c.horizon = m.horizon;
    c.unet_dim = m.unet_dim;
    c.unet_mults = m.unet_mults;
    c.unet_embed_dim = m.unet_embed_dim;
    for (const char* net : {"planner", "dynamics"}) {
      for (const auto& spec : mpd::unet_layout(c, net)) {
        Tensor t{spec.second, {}};
        size_t count = 1;
        for (int64_t d : spec.second) count *= static_cast<size_t>(d);
        const float scale = spec.second.size() > 1 ? 1.0f / std::sqrt(static_cast<float>(count / spec.second[0])) : 0.05f;
        for (size_t e = 0; e < count; ++e) t.data.push_back(next_uniform(&rng) * scale);
        tensors[spec.first] = t;
      }
    }
  } else {
    add_mlp(&tensors, "planner", in, m.width, m.layers, m.horizon * D, &rng);
    add_mlp(&tensors, "dynamics", in, m.width, m.layers, m.horizon * m.state_dim, &rng);
  }
  add_mlp(&tensors, "reward", D, m.ranker_width, m.ranker_layers, m.reward_outputs, &rng);
  if (m.has_cost) add_mlp(&tensors, "cost", D, m.ranker_width, m.ranker_layers, 1, &rng);
  for (auto& t : tensors) {
    if (!m.scaled_net.empty() && t.first.rfind(m.scaled_net + ".", 0) == 0) {
      for (float& v : t.second.data) v *= m.scale;
    }
    if (m.bf16_values) {
      for (float& v : t.second.data) v = mpd::math::bf16_round(v);
    }
  }
  Tensor lo{{m.state_dim}, std::vector<float>(static_cast<size_t>(m.state_dim), -2.0f)};
  Tensor hi{{m.state_dim}, std::vector<float>(static_cast<size_t>(m.state_dim), 2.0f)};
  tensors["normalizer.state_low"] = lo;
  tensors["normalizer.state_high"] = hi;
  tensors["normalizer.action_low"] = Tensor{{m.action_dim}, std::vector<float>(static_cast<size_t>(m.action_dim), -1.0f)};
  tensors["normalizer.action_high"] = Tensor{{m.action_dim}, std::vector<float>(static_cast<size_t>(m.action_dim), 1.0f)};
  if (m.quantiles > 0) {  // evenly spaced quantiles over the min-max ranges above
    auto table = [&](int dim, float lo, float hi) {
      Tensor t{{dim, m.quantiles}, {}};
      for (int i = 0; i < dim; ++i) {
        for (int j = 0; j < m.quantiles; ++j) t.data.push_back(lo + (hi - lo) * j / (m.quantiles - 1) + 0.01f * i);
      }
      return t;
    };
    tensors["normalizer.state_quantiles"] = table(m.state_dim, -2.0f, 2.0f);
    tensors["normalizer.action_quantiles"] = table(m.action_dim, -1.0f, 1.0f);
    if (m.unsorted_quantiles) std::swap(tensors["normalizer.state_quantiles"].data[1], tensors["normalizer.state_quantiles"].data[2]);
  }
  if (!m.drop_tensor.empty()) tensors.erase(m.drop_tensor);
  if (!m.extra_tensor.empty()) tensors[m.extra_tensor] = Tensor{{1}, {0.5f}};

  std::map<std::string, std::string> meta = {
      {"format", "mpdiffuser.model"}, {"format_version", "2"}, {"schedule", "cosine"}, {"env_id", "Tiny-v0"},
      {"state_dim", std::to_string(m.state_dim)}, {"action_dim", std::to_string(m.action_dim)},
      {"cond_dim", std::to_string(cond)}, {"horizon", std::to_string(m.horizon)},
      {"num_steps", std::to_string(m.num_steps)}, {"width", std::to_string(m.width)},
      {"layers", std::to_string(m.layers)}, {"ranker_width", std::to_string(m.ranker_width)},
      {"ranker_layers", std::to_string(m.ranker_layers)}, {"reward_outputs", std::to_string(m.reward_outputs)},
      {"has_cost", m.has_cost ? "1" : "0"}, {"cost_scale", "0.1"},
      {"default.num_candidates", "8"}, {"default.guidance", "1.2"}, {"default.return_target", "0.9"},
      {"default.cost_limit", m.has_cost ? "10.0" : "none"}, {"default.cost_budget", "none"},
      {"default.dynamics_weight", "1.0"}, {"default.dynamics_every", "1"}, {"default.dynamics_last", "0"},
      {"default.discount", "0.997"}, {"default.actions_per_plan", "1"},
      {"prediction", m.prediction}, {"normalizer", m.quantiles > 0 ? "cdf" : "minmax"}, {"return_condition", "authors"},
      {"termination_penalty", "100.0"}, {"default.temperature", "1.0"}, {"default.warm_start_level", "0"},
      {"return_low", "0.0"}, {"return_high", "300.0"}, {"return_discount", "0.997"}, {"condition_dropout", "0.25"},
      {"default.dynamics_guidance", "1.5"}};
  if (m.quantiles > 0) meta["normalizer_quantiles"] = std::to_string(m.quantiles);
  if (m.architecture == "unet") {
    std::string mults;
    for (size_t i = 0; i < m.unet_mults.size(); ++i) mults += (i ? "," : "") + std::to_string(m.unet_mults[i]);
    meta["architecture"] = "unet";
    meta["unet_dim"] = std::to_string(m.unet_dim);
    meta["unet_mults"] = mults;
    meta["unet_embed_dim"] = std::to_string(m.unet_embed_dim);
  }
  for (const auto& kv : m.metadata_overrides) {
    if (kv.second == "<erase>") meta.erase(kv.first);
    else meta[kv.first] = kv.second;
  }
  std::string header = "{\"__metadata__\":{";
  bool first = true;
  for (const auto& kv : meta) {
    header += (first ? "" : ",") + ("\"" + json_escape(kv.first) + "\":\"" + json_escape(kv.second) + "\"");
    first = false;
  }
  header += "}";
  std::vector<uint8_t> data;
  for (const auto& kv : tensors) {
    const uint64_t begin = data.size();
    const size_t bytes = kv.second.data.size() * 4;
    data.resize(data.size() + bytes);
    std::memcpy(data.data() + begin, kv.second.data.data(), bytes);
    header += ",\"" + kv.first + "\":{\"dtype\":\"F32\",\"shape\":[";
    for (size_t i = 0; i < kv.second.shape.size(); ++i) header += (i ? "," : "") + std::to_string(kv.second.shape[i]);
    header += "],\"data_offsets\":[" + std::to_string(begin) + "," + std::to_string(data.size()) + "]}";
  }
  header += "}";
  while (header.size() % 8) header += ' ';
  const uint64_t n = header.size();
  std::vector<uint8_t> file(8 + header.size() + data.size());
  for (int i = 0; i < 8; ++i) file[static_cast<size_t>(i)] = static_cast<uint8_t>(n >> (8 * i));
  std::memcpy(file.data() + 8, header.data(), header.size());
  if (!data.empty()) std::memcpy(file.data() + 8 + header.size(), data.data(), data.size());
  return file;
}

}  // namespace testing

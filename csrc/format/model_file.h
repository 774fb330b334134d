// The model file (design section 2): one safetensors file holding every float32 weight of the
// planner, dynamics, reward and (constrained tasks) cost networks, the normalizer, and string
// metadata: format version, architecture, schedule and sampler defaults.
//
// read_model_file checks the container (header length, JSON, offsets that tile the data exactly),
// then every expected tensor's name, dtype and shape against the metadata, and fails with the
// reason. It never returns a partly filled ModelFile.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "format/options.h"
#include "mpdiffuser/mpdiffuser.h"

namespace mpd {

constexpr int kModelFormatVersion = 5;  // versions 1 to 4 still load (options.def: each option's `since`)
// The metadata key of the content digest (python/mpdiffuser/digest.py DIGEST_KEY): a file that has
// it must match it; one without it loads unverified (mpd_model_info.digest_verified = 0).
constexpr const char* kDigestKey = "digest.sha256";
// The model keys format version 2 added; a version-1 file carrying one is refused (the Python
// reader's VERSION_2_KEYS, held equal by tests/python/test_model_file_corpus.py).
constexpr const char* kVersion2Keys[] = {"prediction", "normalizer", "normalizer_quantiles", "return_condition",
                                         "termination_penalty"};
constexpr int kEmbedDim = 32;                 // the mlp family's step embedding emb(k)
// A model file's values: weights within +-kWeightLimit, normalizer tables within +-kNormalizerLimit
// (config.WEIGHT_LIMIT, config.NORMALIZER_LIMIT).
constexpr double kWeightLimit = 1e6;
constexpr double kNormalizerLimit = 1e9;
constexpr float kTerminationPenalty = 100.0f;  // the ranker's penalty at a window's predicted fall
// The metadata's names, indexed by the enums (mpd_architecture, mpd_prediction; normalizer: Q = 0
// or not). python/mpdiffuser/config.py holds the same lists; tests/python/test_one_home.py checks.
inline constexpr const char* kArchitectureNames[] = {"mlp", "unet"};
inline constexpr const char* kPredictionNames[] = {"epsilon", "sample"};
inline constexpr const char* kNormalizerNames[] = {"minmax", "cdf"};
inline constexpr const char* kReturnConditionNames[] = {"authors", "minmax"};  // checked, used by Python only
// The commands that write model files (metadata 'written_by', optional; export.WRITERS).
inline constexpr const char* kWriterNames[] = {"export", "eval", "tune", "train"};

// Architecture of one residual MLP: in -> width (layers hidden layers) -> out; tensors 0..layers.
struct MlpShape {
  int in = 0;
  int width = 0;
  int layers = 0;
  int out = 0;
};

// The sizes every backend needs, read from the metadata.
struct ModelConfig {
  std::string env_id;
  int state_dim = 0;   // dx
  int action_dim = 0;  // du
  int cond_dim = 0;    // 1 (return) or 2 (return, cost limit)
  int horizon = 0;     // H
  int num_steps = 0;   // K
  int width = 0;
  int layers = 0;
  int ranker_width = 0;
  int ranker_layers = 0;
  int reward_outputs = 0;  // 1, or 2 with a termination logit
  bool has_cost = false;
  double cost_scale = 0.0;  // s_c
  int format_version = 0;
  mpd_prediction prediction = MPD_PREDICT_EPSILON;
  int quantiles = 0;  // Q of the CDF normalizer; 0 = min-max
  mpd_architecture architecture = MPD_ARCH_MLP;
  int unet_dim = 0;             // unet: channels of the first level
  std::vector<int> unet_mults;  // unet: channel multiples per level
  int unet_embed_dim = 0;       // unet: width of the x_0 and condition embeddings
  // State dimensions every planned state keeps at x_0's value (a goal-conditioned robot's desired
  // goal), increasing; empty for most robots and for files before format version 4.
  std::vector<int> fixed_state_dims;

  int window_dim() const { return state_dim + action_dim; }  // D
  MlpShape planner() const;
  MlpShape dynamics() const;
  MlpShape reward() const;
  MlpShape cost() const;
};

// One dense layer's float32 weights as stored: weight [out, in] row-major, bias [out].
struct DenseWeights {
  int in = 0;
  int out = 0;
  std::vector<float> weight;
  std::vector<float> bias;
};

struct MlpWeights {
  MlpShape shape;
  std::vector<DenseWeights> layers;  // layers + 1 entries
};

// One tensor of a network stored by name (the unet family), float32, row-major.
struct NamedTensor {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<float> data;
};

// The tensors (name, shape) a unet planner or dynamics model of `config` holds, in the PyTorch
// module's naming (python/mpdiffuser/models/unet.py) with the network's name in front:
// "planner.down.0.0.first.conv.weight" [d_0, D, 5], ...
std::vector<std::pair<std::string, std::vector<int64_t>>> unet_layout(const ModelConfig& config,
                                                                      const std::string& net);

struct ModelFile {
  ModelConfig config;
  mpd_options defaults{};
  MlpWeights planner, dynamics, reward, cost;  // cost is empty without a cost model; planner and
                                               // dynamics are empty for the unet family
  std::vector<NamedTensor> planner_unet, dynamics_unet;  // the unet family's planner and dynamics
  std::vector<std::string> metadata_read;                 // the metadata keys the reader used
  bool digest_verified = false;                           // the file had a digest and it matched
  std::vector<float> state_low, state_high, action_low, action_high;
  std::vector<float> state_quantiles, action_quantiles;  // [dx, Q], [du, Q] with the CDF normalizer
  // The min-max normalizer's mid = (high + low) / 2 and half = (high - low) / 2 (1 where high ==
  // low), in double as the Python normalizer computes them; every backend reads these. The state's
  // also bound the range check (math::state_in_range) under either normalizer.
  std::vector<double> state_mid, state_half, action_mid, action_half;
};

// Parses and validates data[0, size). On failure returns MPD_ERR_BAD_MODEL_FILE and sets *error.
mpd_status read_model_file(const uint8_t* data, size_t size, ModelFile* out, std::string* error);

// The size a file's header declares (8 + header + the largest tensor end), from its first bytes
// `head` [size] (at least 8 + the header's length); 0 when they hold no readable header, which
// read_model_file then refuses with the reason. Lets a loader refuse a file larger than its
// header says before reading it all.
uint64_t declared_file_size(const uint8_t* head, size_t size);

// Checks options against a model (ranges, cost limit presence); sets *error on failure.
mpd_status check_options(const ModelConfig& config, const mpd_options& options, std::string* error);

}  // namespace mpd

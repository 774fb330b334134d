// Reading and validating the safetensors model file of model_file.h.
//
// Container: 8-byte little-endian header length n, n bytes of JSON {name: {dtype, shape,
// data_offsets}, "__metadata__": {key: string}}, then the data; offsets are relative to the
// data and must tile it exactly (no gaps, no overlaps), as the safetensors format requires.
#include "format/model_file.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <map>
#include <set>
#include <new>

#include "format/json.h"
#include "format/sha256.h"

namespace mpd {

MlpShape ModelConfig::planner() const {
  const int window = horizon * window_dim();
  return {window + state_dim + cond_dim + kEmbedDim, width, layers, window};
}
MlpShape ModelConfig::dynamics() const {
  return {horizon * window_dim() + state_dim + cond_dim + kEmbedDim, width, layers,
          horizon * state_dim};
}
MlpShape ModelConfig::reward() const {
  return {window_dim(), ranker_width, ranker_layers, reward_outputs};
}
MlpShape ModelConfig::cost() const { return {window_dim(), ranker_width, ranker_layers, 1}; }

namespace {

constexpr uint64_t kMaxHeaderBytes = uint64_t{1} << 26;  // 64 MiB of JSON is not a model file

// `text` for an error message: control bytes (a NUL inside a dtype, say) as \xNN, at most 80 bytes,
// so a message never ends early or hides what the file holds.
std::string printable(const std::string& text) {
  static const char kDigits[] = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < text.size() && i < 80; ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c < 0x20 || c == 0x7f) {
      out += "\\x";
      out.push_back(kDigits[c >> 4]);
      out.push_back(kDigits[c & 15]);
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  if (text.size() > 80) out += "...";
  return out;
}

struct TensorEntry {
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;
  bool bf16 = false;  // dtype BF16 (network weights only): widened to float32 exactly at load
};

// A number as the writers spell it (Python's str(int) and repr(float)): JSON's number grammar (an
// optional '-', digits without a leading zero, for reals an optional fraction and exponent), at
// most 64 characters. strtod alone would also take " 1", "inf", "nan",
// "0x1p3" and "+1", which the Python reader (python/mpdiffuser/export.py) refuses too.
bool plain_number(const std::string& s, bool real) {
  if (s.empty() || s.size() > 64) return false;
  size_t i = 0;
  auto digits = [&]() {
    const size_t start = i;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i;
    return i > start;
  };
  if (i < s.size() && s[i] == '-') ++i;
  const size_t first = i;
  if (!digits() || (s[first] == '0' && i - first > 1)) return false;  // JSON's grammar: no leading zeros
  if (real && i < s.size() && s[i] == '.') {
    ++i;
    if (!digits()) return false;
  }
  if (real && i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < s.size() && (s[i] == '+' || s[i] == '-')) ++i;
    if (!digits()) return false;
  }
  return i == s.size();
}

// The metadata map with typed, range-checked getters; each failure names the key.
class Metadata {
 public:
  explicit Metadata(std::map<std::string, std::string> values) : values_(std::move(values)) {}

  bool has(const char* key) const { return values_.count(key) != 0; }
  bool text(const char* key, std::string* out, std::string* error) const {
    read_.insert(key);
    const auto it = values_.find(key);
    if (it == values_.end()) {
      *error = std::string("metadata key '") + key + "' is missing";
      return false;
    }
    *out = it->second;
    return true;
  }
  bool integer(const char* key, int lo, int hi, int* out, std::string* error) const {
    std::string s;
    if (!text(key, &s, error)) return false;
    char* end = nullptr;
    errno = 0;
    const long v = std::strtol(s.c_str(), &end, 10);
    if (!plain_number(s, false) || *end != '\0' || errno != 0 || v < lo || v > hi) {
      *error = std::string("metadata '") + key + "' must be an integer in [" + std::to_string(lo) +
               ", " + std::to_string(hi) + "], got '" + printable(s) + "'";
      return false;
    }
    *out = static_cast<int>(v);
    return true;
  }
  bool real(const char* key, double lo, double hi, double* out, std::string* error) const {
    std::string s;
    if (!text(key, &s, error)) return false;
    char* end = nullptr;
    const double v = std::strtod(s.c_str(), &end);
    if (!plain_number(s, true) || *end != '\0' || !std::isfinite(v) || v < lo || v > hi) {
      *error = std::string("metadata '") + key + "' must be a number in [" + std::to_string(lo) +
               ", " + std::to_string(hi) + "], got '" + printable(s) + "'";
      return false;
    }
    *out = v;
    return true;
  }
  // A number in [lo, hi], or "none" (*has = false).
  bool optional_real(const char* key, double lo, double hi, double* out, bool* has, std::string* error) const {
    std::string s;
    if (!text(key, &s, error)) return false;
    *has = s != "none";
    *out = 0.0;
    return !*has || real(key, lo, hi, out, error);
  }
  std::vector<std::string> read() const { return {read_.begin(), read_.end()}; }  // the keys asked for

 private:
  std::map<std::string, std::string> values_;
  mutable std::set<std::string> read_;
};

// The index of `name` in a name table, or -1; "'a' or 'b'" for the error message.
template <size_t N>
int name_index(const char* const (&names)[N], const std::string& name) {
  for (size_t i = 0; i < N; ++i) {
    if (name == names[i]) return static_cast<int>(i);
  }
  return -1;
}
template <size_t N>
std::string name_choices(const char* const (&names)[N]) {
  std::string s;
  for (size_t i = 0; i < N; ++i) s += std::string(i == 0 ? "" : i + 1 == N ? " or " : ", ") + "'" + names[i] + "'";
  return s;
}

// fixed_state_dims: "" (none) or comma-separated increasing integers in [0, state_dim).
bool read_fixed_dims(const Metadata& meta, ModelConfig* c, std::string* error) {
  std::string dims;
  if (!meta.text("fixed_state_dims", &dims, error)) return false;
  c->fixed_state_dims.clear();
  if (dims.empty()) return true;
  size_t start = 0;
  while (start <= dims.size()) {
    const size_t comma = std::min(dims.find(',', start), dims.size());
    const std::string item = dims.substr(start, comma - start);
    char* end = nullptr;
    const long d = std::strtol(item.c_str(), &end, 10);
    const int previous = c->fixed_state_dims.empty() ? -1 : c->fixed_state_dims.back();
    if (item.empty() || !std::isdigit(static_cast<unsigned char>(item[0])) || *end != '\0' || d <= previous ||
        d >= c->state_dim) {
      *error = "metadata 'fixed_state_dims' is '" + printable(dims) +
               "', expected increasing comma-separated state dimensions in [0, " + std::to_string(c->state_dim) + ")";
      return false;
    }
    c->fixed_state_dims.push_back(static_cast<int>(d));
    start = comma + 1;
  }
  return true;
}

// The unet family's sizes, with the shape rules of python/mpdiffuser/models/unet.py.
bool read_unet(const Metadata& meta, ModelConfig* c, std::string* error) {
  std::string mults;
  if (!meta.integer("unet_dim", 2, 4096, &c->unet_dim, error) ||
      !meta.integer("unet_embed_dim", 2, 4096, &c->unet_embed_dim, error) ||
      !meta.text("unet_mults", &mults, error)) {
    return false;
  }
  c->unet_mults.clear();
  size_t start = 0;
  while (start <= mults.size()) {
    const size_t comma = std::min(mults.find(',', start), mults.size());
    const std::string item = mults.substr(start, comma - start);
    char* end = nullptr;
    const long m = std::strtol(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0' || m < 1 || m > 64) {
      *error = "metadata 'unet_mults' is '" + mults + "', expected comma-separated integers in [1, 64]";
      return false;
    }
    c->unet_mults.push_back(static_cast<int>(m));
    start = comma + 1;
  }
  const size_t levels = c->unet_mults.size();
  if (levels < 2 || levels > 8) {
    *error = "metadata 'unet_mults' must hold 2 to 8 levels, got " + std::to_string(levels);
    return false;
  }
  for (int m : c->unet_mults) {
    if ((c->unet_dim * m) % 8 != 0) {
      *error = "metadata 'unet_dim' x 'unet_mults' must be divisible by 8 (GroupNorm groups)";
      return false;
    }
  }
  if (c->horizon % (1 << (levels - 1)) != 0) {
    *error = "metadata 'horizon' " + std::to_string(c->horizon) + " is not divisible by " +
             std::to_string(1 << (levels - 1)) + ", as the unet's " + std::to_string(levels) + " levels need";
    return false;
  }
  return true;
}

// The sampler defaults, default.<name> for every option of the table (mpdiffuser/options.def);
// an option newer than the file's format version takes its legacy value.
bool read_defaults(const Metadata& meta, const ModelConfig& c, int version, mpd_options* d, std::string* error) {
  for (const OptionSpec& s : kOptionSpecs) {
    if (version < s.since) continue;
    const std::string key = std::string("default.") + s.name;
    const double high = option_high(s, c.horizon, c.num_steps);
    bool set = true;
    double value = 0.0;
    int count = 0;
    const bool ok = s.kind == OptionKind::kCount
                        ? meta.integer(key.c_str(), static_cast<int>(s.low), static_cast<int>(high), &count, error)
                    : s.kind == OptionKind::kReal ? meta.real(key.c_str(), s.low, high, &value, error)
                                                  : meta.optional_real(key.c_str(), s.low, high, &value, &set, error);
    if (!ok) return false;
    set_option(d, s, s.kind == OptionKind::kCount ? count : value, set);
  }
  for (const OptionSpec& s : kOptionSpecs) {  // after the loop above: a legacy value may name another option
    if (version >= s.since) continue;
    double value = std::strtod(s.legacy, nullptr);
    for (const OptionSpec& other : kOptionSpecs) {
      if (std::string(other.name) == s.legacy) value = option_value(*d, other);
    }
    set_option(d, s, value);
  }
  return true;
}

bool read_config(const Metadata& meta, ModelConfig* c, mpd_options* d, std::string* error) {
  std::string format, schedule;
  int version = 0, has_cost = 0;
  if (!meta.text("format", &format, error)) return false;
  if (format != "mpdiffuser.model") {
    *error = "metadata 'format' is '" + format + "', expected 'mpdiffuser.model'";
    return false;
  }
  if (!meta.integer("format_version", 0, 1 << 30, &version, error)) return false;
  if (version < 1 || version > kModelFormatVersion) {
    *error = "model format version " + std::to_string(version) + " is not supported (expected 1 to " +
             std::to_string(kModelFormatVersion) + ")";
    return false;
  }
  c->format_version = version;
  if (version == 1) {  // one rule in both readers: version 2's keys in a version-1 file contradict it
    for (const char* key : kVersion2Keys) {
      if (meta.has(key)) {
        *error = std::string("metadata '") + key +
                 "' was added in format version 2, but the file says version 1: its version or its metadata was edited";
        return false;
      }
    }
  }
  if (!meta.text("schedule", &schedule, error)) return false;
  if (schedule != "cosine") {
    *error = "metadata 'schedule' is '" + schedule + "', only 'cosine' is supported";
    return false;
  }
  if (!meta.text("env_id", &c->env_id, error)) return false;
  const bool ok =
      meta.integer("state_dim", 1, 4096, &c->state_dim, error) &&
      meta.integer("action_dim", 1, 4096, &c->action_dim, error) &&
      meta.integer("cond_dim", 1, 2, &c->cond_dim, error) &&
      meta.integer("horizon", 1, 1024, &c->horizon, error) &&
      meta.integer("num_steps", 1, 10000, &c->num_steps, error) &&
      meta.integer("width", 1, 65536, &c->width, error) &&
      meta.integer("layers", 1, 64, &c->layers, error) &&
      meta.integer("ranker_width", 1, 65536, &c->ranker_width, error) &&
      meta.integer("ranker_layers", 1, 64, &c->ranker_layers, error) &&
      meta.integer("reward_outputs", 1, 2, &c->reward_outputs, error) &&
      meta.integer("has_cost", 0, 1, &has_cost, error) &&
      meta.real("cost_scale", 0.0, 1e30, &c->cost_scale, error);
  if (!ok) return false;
  c->has_cost = has_cost == 1;
  if (c->cond_dim != (c->has_cost ? 2 : 1)) {
    *error = "metadata 'cond_dim' is " + std::to_string(c->cond_dim) + " but 'has_cost' is " +
             std::to_string(has_cost) + " (expected cond_dim " + (c->has_cost ? "2)" : "1)");
    return false;
  }
  if (static_cast<int64_t>(c->horizon) * c->window_dim() > (1 << 24)) {
    *error = "horizon * (state_dim + action_dim) exceeds 2^24";
    return false;
  }
  if (version < 4 && meta.has("fixed_state_dims")) {
    *error = "metadata 'fixed_state_dims' was added in format version 4, but the file says version " +
             std::to_string(version) + ": its version or its metadata was edited";
    return false;
  }
  if (version >= 4 && !read_fixed_dims(meta, c, error)) return false;
  // Version 1 predates these keys; its files are epsilon-prediction, min-max models.
  c->prediction = MPD_PREDICT_EPSILON;
  std::string architecture = kArchitectureNames[MPD_ARCH_MLP];  // files before the key are all mlp
  if (meta.has("architecture") && !meta.text("architecture", &architecture, error)) return false;
  const int arch = name_index(kArchitectureNames, architecture);
  if (arch < 0) {
    *error = "metadata 'architecture' is '" + architecture + "', expected " + name_choices(kArchitectureNames);
    return false;
  }
  c->architecture = static_cast<mpd_architecture>(arch);
  if (c->architecture == MPD_ARCH_UNET && !read_unet(meta, c, error)) return false;
  if (version >= 2) {
    std::string prediction, normalizer;
    if (!meta.text("prediction", &prediction, error) || !meta.text("normalizer", &normalizer, error)) return false;
    const int pred = name_index(kPredictionNames, prediction);
    if (pred < 0) {
      *error = "metadata 'prediction' is '" + prediction + "', expected " + name_choices(kPredictionNames);
      return false;
    }
    c->prediction = static_cast<mpd_prediction>(pred);
    const int norm = name_index(kNormalizerNames, normalizer);
    if (norm < 0) {
      *error = "metadata 'normalizer' is '" + normalizer + "', expected " + name_choices(kNormalizerNames);
      return false;
    }
    if (norm == 1 && !meta.integer("normalizer_quantiles", 2, 1 << 16, &c->quantiles, error)) return false;
  }
  // Keys the native planner does not use (the condition's scale, training settings, provenance),
  // checked by the same rules as the Python reader so that both accept the same files.
  if (version >= 2) {
    double unused = 0.0;
    std::string text;
    const bool python_keys_ok =
        meta.real("return_low", -1e30, 1e30, &unused, error) && meta.real("return_high", -1e30, 1e30, &unused, error) &&
        meta.real("return_discount", 1e-9, 1.0, &unused, error) &&
        meta.real("condition_dropout", 0.0, 0.999999, &unused, error) &&
        meta.real("termination_penalty", 0.0, 1e30, &unused, error) && meta.text("return_condition", &text, error);
    if (!python_keys_ok) return false;
    if (name_index(kReturnConditionNames, text) < 0) {
      *error = "metadata 'return_condition' is '" + printable(text) + "', expected " +
               name_choices(kReturnConditionNames);
      return false;
    }
  }
  if (meta.has("written_by")) {
    std::string writer;
    meta.text("written_by", &writer, error);
    if (name_index(kWriterNames, writer) < 0) {
      *error = "metadata 'written_by' is '" + printable(writer) + "', expected " + name_choices(kWriterNames);
      return false;
    }
  }
  return read_defaults(meta, *c, version, d, error);
}

void mid_and_half(const std::vector<float>& low, const std::vector<float>& high, std::vector<double>* mid,
                  std::vector<double>* half) {
  for (size_t i = 0; i < low.size(); ++i) {
    mid->push_back((static_cast<double>(high[i]) + low[i]) / 2.0);
    const double h = (static_cast<double>(high[i]) - low[i]) / 2.0;
    half->push_back(h > 0.0 ? h : 1.0);
  }
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// Copies tensor `name` of exactly `shape` out of the data section (unaligned little-endian f32).
bool take(const std::map<std::string, TensorEntry>& tensors, const uint8_t* data,
          const std::string& name, const std::vector<int64_t>& shape, std::vector<float>* out,
          std::vector<std::string>* used, std::string* error) {
  const auto it = tensors.find(name);
  if (it == tensors.end()) {
    *error = "tensor '" + name + "' is missing";
    return false;
  }
  if (it->second.shape != shape) {
    *error = "tensor '" + name + "' has shape " + shape_string(it->second.shape) + ", expected " +
             shape_string(shape);
    return false;
  }
  const bool bf16 = it->second.bf16;
  if (bf16 && name.rfind("normalizer.", 0) == 0) {
    *error = "tensor '" + name + "' is BF16; normalizer tables must be F32";
    return false;
  }
  const size_t count = static_cast<size_t>((it->second.end - it->second.begin) / (bf16 ? 2 : 4));
  out->resize(count);
  if (!bf16) {
    if (count) std::memcpy(out->data(), data + it->second.begin, count * 4);
  } else {  // little-endian bfloat16: the upper half of the float32
    const uint8_t* src = data + it->second.begin;
    for (size_t i = 0; i < count; ++i) {
      const uint32_t bits = (static_cast<uint32_t>(src[2 * i]) | static_cast<uint32_t>(src[2 * i + 1]) << 8) << 16;
      std::memcpy(out->data() + i, &bits, sizeof bits);
    }
  }
  // Weights within +-kWeightLimit, normalizer tables within +-kNormalizerLimit: a value beyond is
  // a corrupt file, whose plans would overflow differently on each backend or be de-normalized to
  // nonsense returned as success.
  const double limit = name.rfind("normalizer.", 0) == 0 ? kNormalizerLimit : kWeightLimit;
  for (size_t i = 0; i < count; ++i) {
    const float v = (*out)[i];
    if (!std::isfinite(v)) {
      *error = "tensor '" + name + "' holds NaN or infinity";
      return false;
    }
    if (std::fabs(v) > limit) {
      char bound[32];
      std::snprintf(bound, sizeof bound, "%g", limit);
      *error = "tensor '" + name + "'[" + std::to_string(i) + "] lies outside +-" + bound + ": a corrupt file";
      return false;
    }
  }
  used->push_back(name);
  return true;
}

// A normalizer's low <= high per dimension (low == high is a dimension the data never varied: it
// maps to 0).
bool ordered(const std::vector<float>& low, const std::vector<float>& high, const std::string& name,
             std::string* error) {
  for (size_t i = 0; i < low.size(); ++i) {
    if (low[i] > high[i]) {
      *error = "tensor 'normalizer." + name + "_low'[" + std::to_string(i) + "] exceeds 'normalizer." + name +
               "_high'[" + std::to_string(i) + "]: a corrupt normalizer";
      return false;
    }
  }
  return true;
}

// Every row of a CDF table [dim, Q] must be non-decreasing, or F would not be a function.
bool monotone(const std::vector<float>& table, int Q, const std::string& name, std::string* error) {
  for (size_t i = 1; i < table.size(); ++i) {
    if (i % static_cast<size_t>(Q) != 0 && table[i] < table[i - 1]) {
      *error = "tensor '" + name + "' is not non-decreasing in row " + std::to_string(i / static_cast<size_t>(Q));
      return false;
    }
  }
  return true;
}

bool take_mlp(const std::map<std::string, TensorEntry>& tensors, const uint8_t* data,
              const std::string& net, const MlpShape& shape, MlpWeights* out,
              std::vector<std::string>* used, std::string* error) {
  out->shape = shape;
  out->layers.assign(static_cast<size_t>(shape.layers) + 1, DenseWeights{});
  for (int l = 0; l <= shape.layers; ++l) {
    DenseWeights& layer = out->layers[static_cast<size_t>(l)];
    layer.in = l == 0 ? shape.in : shape.width;
    layer.out = l == shape.layers ? shape.out : shape.width;
    const std::string prefix = net + "." + std::to_string(l);
    if (!take(tensors, data, prefix + ".weight", {layer.out, layer.in}, &layer.weight, used, error) ||
        !take(tensors, data, prefix + ".bias", {layer.out}, &layer.bias, used, error)) {
      return false;
    }
  }
  return true;
}

bool take_unet(const std::map<std::string, TensorEntry>& tensors, const uint8_t* data, const ModelConfig& c,
               const std::string& net, std::vector<NamedTensor>* out, std::vector<std::string>* used,
               std::string* error) {
  out->clear();
  for (const auto& spec : unet_layout(c, net)) {
    NamedTensor t{spec.first, spec.second, {}};
    if (!take(tensors, data, t.name, t.shape, &t.data, used, error)) return false;
    out->push_back(std::move(t));
  }
  return true;
}

bool parse_tensor_entry(const std::string& name, const json::Value& v, uint64_t data_size,
                        TensorEntry* entry, std::string* error) {
  const std::string where = "tensor '" + printable(name) + "': ";
  if (v.kind != json::Value::Kind::kObject) {
    *error = where + "header entry is not an object";
    return false;
  }
  const json::Value* dtype = v.find("dtype");
  const json::Value* shape = v.find("shape");
  const json::Value* offsets = v.find("data_offsets");
  if (!dtype || dtype->kind != json::Value::Kind::kString || !shape ||
      shape->kind != json::Value::Kind::kArray || !offsets ||
      offsets->kind != json::Value::Kind::kArray || offsets->array.size() != 2) {
    *error = where + "needs 'dtype' (string), 'shape' (array) and 'data_offsets' ([begin, end])";
    return false;
  }
  if (dtype->string != "F32" && dtype->string != "BF16") {
    *error = where + "dtype is " + printable(dtype->string) + ", expected F32 or BF16";
    return false;
  }
  entry->bf16 = dtype->string == "BF16";
  const uint64_t width = entry->bf16 ? 2 : 4;
  uint64_t count = 1;
  for (const json::Value& d : shape->array) {
    if (d.kind != json::Value::Kind::kNumber || !d.is_integer || d.integer < 0 ||
        d.integer > (int64_t{1} << 32)) {
      *error = where + "shape holds a value that is not a small non-negative integer";
      return false;
    }
    entry->shape.push_back(d.integer);
    count *= static_cast<uint64_t>(d.integer);
    if (count > (uint64_t{1} << 40)) {
      *error = where + "shape is too large";
      return false;
    }
  }
  for (const json::Value& o : offsets->array) {
    if (o.kind != json::Value::Kind::kNumber || !o.is_integer || o.integer < 0) {
      *error = where + "data_offsets must be non-negative integers";
      return false;
    }
  }
  entry->begin = static_cast<uint64_t>(offsets->array[0].integer);
  entry->end = static_cast<uint64_t>(offsets->array[1].integer);
  if (entry->begin > entry->end || entry->end > data_size) {
    *error = where + "data_offsets [" + std::to_string(entry->begin) + ", " +
             std::to_string(entry->end) + "] fall outside the " + std::to_string(data_size) +
             "-byte data section (truncated file?)";
    return false;
  }
  if (entry->end - entry->begin != count * width) {
    *error = where + "holds " + std::to_string(entry->end - entry->begin) + " bytes, but shape " +
             shape_string(entry->shape) + " of " + dtype->string + " needs " + std::to_string(count * width);
    return false;
  }
  return true;
}

// The content digest of python/mpdiffuser/digest.py: metadata (the digest left out) and tensors,
// each list in byte order of its keys (std::map's order), strings and counts as u64 little-endian.
std::string content_digest(const std::map<std::string, std::string>& meta,
                           const std::map<std::string, TensorEntry>& tensors, const uint8_t* data) {
  Sha256 h;
  h.update_u64(meta.size() - meta.count(kDigestKey));
  for (const auto& kv : meta) {
    if (kv.first == kDigestKey) continue;
    h.update_string(kv.first);
    h.update_string(kv.second);
  }
  h.update_u64(tensors.size());
  for (const auto& t : tensors) {
    h.update_string(t.first);
    h.update_string(t.second.bf16 ? "BF16" : "F32");  // parse_tensor_entry accepts no other dtype
    h.update_u64(t.second.shape.size());
    for (int64_t d : t.second.shape) h.update_u64(static_cast<uint64_t>(d));
    h.update_u64(t.second.end - t.second.begin);
    h.update(data + t.second.begin, static_cast<size_t>(t.second.end - t.second.begin));
  }
  return Sha256::hex(h.finish());
}

mpd_status parse(const uint8_t* bytes, size_t size, ModelFile* out, std::string* error) {
  if (size < 8) {
    *error = "file of " + std::to_string(size) + " bytes is too short for a safetensors header";
    return MPD_ERR_BAD_MODEL_FILE;
  }
  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | bytes[i];
  if (header_size > kMaxHeaderBytes || header_size > size - 8) {
    *error = "header length " + std::to_string(header_size) + " exceeds the file's " +
             std::to_string(size - 8) + " remaining bytes (truncated or not a safetensors file)";
    return MPD_ERR_BAD_MODEL_FILE;
  }
  json::Value header;
  std::string json_error;
  if (!json::parse(reinterpret_cast<const char*>(bytes + 8), static_cast<size_t>(header_size),
                   &header, &json_error)) {
    *error = "header is not valid JSON: " + json_error;
    return MPD_ERR_BAD_MODEL_FILE;
  }
  if (header.kind != json::Value::Kind::kObject) {
    *error = "header is not a JSON object";
    return MPD_ERR_BAD_MODEL_FILE;
  }
  const uint64_t data_size = size - 8 - header_size;
  const uint8_t* data = bytes + 8 + header_size;
  std::map<std::string, std::string> meta_values;
  std::map<std::string, TensorEntry> tensors;
  for (const auto& member : header.object) {
    if (member.first == "__metadata__") {
      if (member.second.kind != json::Value::Kind::kObject) {
        *error = "__metadata__ is not an object";
        return MPD_ERR_BAD_MODEL_FILE;
      }
      for (const auto& kv : member.second.object) {
        if (kv.second.kind != json::Value::Kind::kString) {
          *error = "metadata '" + printable(kv.first) + "' is not a string";
          return MPD_ERR_BAD_MODEL_FILE;
        }
        meta_values[kv.first] = kv.second.string;
      }
      continue;
    }
    TensorEntry entry;
    if (!parse_tensor_entry(member.first, member.second, data_size, &entry, error)) {
      return MPD_ERR_BAD_MODEL_FILE;
    }
    tensors[member.first] = entry;
  }
  // The tensors must tile the data section: sorted by offset, each starts where the last ended.
  std::vector<std::pair<uint64_t, uint64_t>> spans;
  for (const auto& t : tensors) spans.emplace_back(t.second.begin, t.second.end);
  std::sort(spans.begin(), spans.end());
  uint64_t cursor = 0;
  for (const auto& span : spans) {
    if (span.first != cursor) {
      *error = "tensor data " + std::string(span.first < cursor ? "overlaps" : "leaves a gap") +
               " at byte " + std::to_string(std::min(span.first, cursor));
      return MPD_ERR_BAD_MODEL_FILE;
    }
    cursor = span.second;
  }
  if (cursor != data_size) {
    *error = "data section holds " + std::to_string(data_size) + " bytes, tensors cover " +
             std::to_string(cursor);
    return MPD_ERR_BAD_MODEL_FILE;
  }

  ModelFile file;
  const auto stored_digest = meta_values.find(kDigestKey);
  if (stored_digest != meta_values.end()) {
    const std::string actual = content_digest(meta_values, tensors, data);
    if (actual != stored_digest->second) {
      *error = "content digest mismatch (stored " + printable(stored_digest->second.substr(0, 16)) + "..., computed " +
               actual.substr(0, 16) + "...): the file was changed or corrupted after it was written";
      return MPD_ERR_BAD_MODEL_FILE;
    }
    file.digest_verified = true;
  }
  const Metadata meta(std::move(meta_values));
  if (!read_config(meta, &file.config, &file.defaults, error)) return MPD_ERR_BAD_MODEL_FILE;
  file.metadata_read = meta.read();
  if (file.digest_verified) file.metadata_read.push_back(kDigestKey);
  const ModelConfig& c = file.config;
  std::vector<std::string> used;
  const bool unet = c.architecture == MPD_ARCH_UNET;
  const bool ok =
      (unet ? take_unet(tensors, data, c, "planner", &file.planner_unet, &used, error) &&
                  take_unet(tensors, data, c, "dynamics", &file.dynamics_unet, &used, error)
            : take_mlp(tensors, data, "planner", c.planner(), &file.planner, &used, error) &&
                  take_mlp(tensors, data, "dynamics", c.dynamics(), &file.dynamics, &used, error)) &&
      take_mlp(tensors, data, "reward", c.reward(), &file.reward, &used, error) &&
      (!c.has_cost || take_mlp(tensors, data, "cost", c.cost(), &file.cost, &used, error)) &&
      take(tensors, data, "normalizer.state_low", {c.state_dim}, &file.state_low, &used, error) &&
      take(tensors, data, "normalizer.state_high", {c.state_dim}, &file.state_high, &used, error) &&
      take(tensors, data, "normalizer.action_low", {c.action_dim}, &file.action_low, &used, error) &&
      take(tensors, data, "normalizer.action_high", {c.action_dim}, &file.action_high, &used, error) &&
      (c.quantiles == 0 ||
       (take(tensors, data, "normalizer.state_quantiles", {c.state_dim, c.quantiles}, &file.state_quantiles, &used,
             error) &&
        take(tensors, data, "normalizer.action_quantiles", {c.action_dim, c.quantiles}, &file.action_quantiles,
             &used, error) &&
        monotone(file.state_quantiles, c.quantiles, "normalizer.state_quantiles", error) &&
        monotone(file.action_quantiles, c.quantiles, "normalizer.action_quantiles", error)));
  if (!ok || !ordered(file.state_low, file.state_high, "state", error) ||
      !ordered(file.action_low, file.action_high, "action", error)) {
    return MPD_ERR_BAD_MODEL_FILE;
  }
  mid_and_half(file.state_low, file.state_high, &file.state_mid, &file.state_half);
  mid_and_half(file.action_low, file.action_high, &file.action_mid, &file.action_half);
  if (used.size() != tensors.size()) {
    std::sort(used.begin(), used.end());
    for (const auto& t : tensors) {
      if (!std::binary_search(used.begin(), used.end(), t.first)) {
        *error = "unexpected tensor '" + printable(t.first) + "' (file written for another architecture?)";
        return MPD_ERR_BAD_MODEL_FILE;
      }
    }
  }
  std::string options_error;
  // A cost model's stored defaults may leave the cost limit to the caller ("none").
  mpd_options stored = file.defaults;
  if (c.has_cost && !stored.has_cost_limit) stored.has_cost_limit = 1;
  if (check_options(c, stored, &options_error) != MPD_OK) {
    *error = "stored sampler defaults are invalid: " + options_error;
    return MPD_ERR_BAD_MODEL_FILE;
  }
  *out = std::move(file);
  return MPD_OK;
}

}  // namespace

uint64_t declared_file_size(const uint8_t* head, size_t size) {
  if (size < 8) return 0;
  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | head[i];
  if (header_size > kMaxHeaderBytes || header_size > size - 8) return 0;
  json::Value header;
  std::string ignored;
  if (!json::parse(reinterpret_cast<const char*>(head + 8), static_cast<size_t>(header_size), &header, &ignored) ||
      header.kind != json::Value::Kind::kObject) {
    return 0;
  }
  uint64_t end = 0;
  for (const auto& member : header.object) {
    const json::Value* offsets = member.second.find("data_offsets");
    if (offsets == nullptr || offsets->kind != json::Value::Kind::kArray || offsets->array.size() != 2) continue;
    const json::Value& last = offsets->array[1];
    if (last.kind == json::Value::Kind::kNumber && last.number >= 0 && last.number < 1.8e19) {
      end = std::max(end, static_cast<uint64_t>(last.number));
    }
  }
  return 8 + header_size + end;
}

mpd_status read_model_file(const uint8_t* data, size_t size, ModelFile* out, std::string* error) {
  try {
    return parse(data, size, out, error);
  } catch (const std::bad_alloc&) {
    *error = "out of memory while reading the model file";
    return MPD_ERR_OUT_OF_MEMORY;
  }
}

mpd_status check_options(const ModelConfig& c, const mpd_options& o, std::string* error) {
  for (const OptionSpec& s : kOptionSpecs) {
    if (s.kind == OptionKind::kOptionalReal && o.*s.has > 1) {
      *error = std::string("has_") + s.name + " must be 0 or 1";
      return MPD_ERR_INVALID_ARGUMENT;
    }
    if (!option_set(o, s)) continue;
    const double v = option_value(o, s);
    if (!(v >= s.low && v <= option_high(s, c.horizon, c.num_steps)) || !std::isfinite(v)) {
      *error = option_range_message(s, v, c.horizon, c.num_steps);
      return MPD_ERR_INVALID_ARGUMENT;
    }
  }
  if (c.has_cost && !o.has_cost_limit) {
    *error = "this model is cost-conditioned: set a cost_limit";
    return MPD_ERR_INVALID_ARGUMENT;
  }
  if (!c.has_cost && o.has_cost_limit) {
    *error = "cost_limit given, but the model was trained without costs";
    return MPD_ERR_INVALID_ARGUMENT;
  }
  return MPD_OK;
}

}  // namespace mpd

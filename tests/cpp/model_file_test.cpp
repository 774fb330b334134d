// The model file reader rejects every broken file with a reason and never half-loads or crashes:
// a table of broken variants, every truncation, and random byte corruption.
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "check.h"
#include "model_writer.h"
#include "mpdiffuser/mpdiffuser.h"

namespace {

// Loads bytes; returns the status and the message.
mpd_status load(const std::vector<uint8_t>& bytes, std::string* message) {
  char buffer[512];
  std::memset(buffer, 'x', sizeof buffer);
  mpd_model* model = reinterpret_cast<mpd_model*>(0x1);
  const mpd_status s = mpd_model_load_memory(bytes.data(), bytes.size(), &model, buffer, sizeof buffer);
  CHECK(std::memchr(buffer, '\0', sizeof buffer) != nullptr);  // always NUL-terminated
  *message = buffer;
  if (s == MPD_OK) {
    CHECK(model != nullptr);
    mpd_model_free(model);
  } else {
    CHECK(model == nullptr);  // never half-loaded
  }
  return s;
}

void expect_rejected(const testing::TinyModel& m, const char* needle) {
  std::string message;
  const mpd_status s = load(testing::write_model(m), &message);
  if (s != MPD_ERR_BAD_MODEL_FILE || message.find(needle) == std::string::npos) {
    std::printf("expected rejection containing '%s', got status %d: %s\n", needle, s, message.c_str());
    ++check::failures();
  }
}

testing::TinyModel with_meta(const std::string& key, const std::string& value) {
  testing::TinyModel m;
  m.metadata_overrides[key] = value;
  return m;
}

}  // namespace

int main() {
  std::string message;
  // Valid files, with and without a cost model, load and describe themselves.
  const std::vector<uint8_t> good = testing::write_model(testing::TinyModel{});
  CHECK(load(good, &message) == MPD_OK);
  testing::TinyModel costly;
  costly.has_cost = true;
  mpd_model* model = nullptr;
  const std::vector<uint8_t> cost_bytes = testing::write_model(costly);
  CHECK(mpd_model_load_memory(cost_bytes.data(), cost_bytes.size(), &model, nullptr, 0) == MPD_OK);
  mpd_model_info info;
  CHECK(mpd_model_get_info(model, &info) == MPD_OK);
  CHECK(info.state_dim == 3 && info.action_dim == 2 && info.horizon == 4 && info.num_steps == 5);
  CHECK(info.has_cost == 1 && info.cond_dim == 2 && std::strcmp(info.env_id, "Tiny-v0") == 0);
  mpd_options options;
  CHECK(mpd_model_default_options(model, &options) == MPD_OK);
  CHECK(options.num_candidates == 8 && options.has_cost_limit == 1 && options.cost_limit == 10.0);
  CHECK(options.discount == 0.997 && options.guidance == 1.2);
  mpd_model_free(model);

  // Broken variants: each rejected with a message naming the problem.
  CHECK(options.temperature == 1.0 && options.warm_start_level == 0 && options.dynamics_guidance == 1.5);
  CHECK(info.format_version == 2 && info.prediction == MPD_PREDICT_EPSILON);

  // A version 1 file (before prediction, normalizer, temperature and warm start) still loads:
  // epsilon-prediction, sampled cold at temperature 1.
  testing::TinyModel v1;
  v1.metadata_overrides = {{"format_version", "1"}, {"prediction", "<erase>"}, {"normalizer", "<erase>"},
                           {"return_condition", "<erase>"}, {"termination_penalty", "<erase>"},
                           {"default.temperature", "<erase>"}, {"default.warm_start_level", "<erase>"},
                           {"default.dynamics_guidance", "<erase>"}};
  const std::vector<uint8_t> v1_bytes = testing::write_model(v1);
  CHECK(mpd_model_load_memory(v1_bytes.data(), v1_bytes.size(), &model, nullptr, 0) == MPD_OK);
  CHECK(mpd_model_get_info(model, &info) == MPD_OK && info.format_version == 1);
  CHECK(info.prediction == MPD_PREDICT_EPSILON);
  CHECK(mpd_model_default_options(model, &options) == MPD_OK);
  CHECK(options.temperature == 1.0 && options.warm_start_level == 0);
  CHECK(options.dynamics_guidance == options.guidance);  // version 1: one w for both models
  mpd_model_free(model);
  testing::TinyModel sample;
  sample.prediction = "sample";
  const std::vector<uint8_t> sample_bytes = testing::write_model(sample);
  CHECK(mpd_model_load_memory(sample_bytes.data(), sample_bytes.size(), &model, nullptr, 0) == MPD_OK);
  CHECK(mpd_model_get_info(model, &info) == MPD_OK && info.prediction == MPD_PREDICT_SAMPLE);
  mpd_model_free(model);

  testing::TinyModel cdf;
  cdf.quantiles = 9;
  const std::vector<uint8_t> cdf_bytes = testing::write_model(cdf);
  CHECK(mpd_model_load_memory(cdf_bytes.data(), cdf_bytes.size(), &model, nullptr, 0) == MPD_OK);
  mpd_model_free(model);
  testing::TinyModel unsorted = cdf;
  unsorted.unsorted_quantiles = true;
  expect_rejected(unsorted, "'normalizer.state_quantiles' is not non-decreasing in row 0");
  testing::TinyModel no_table = cdf;
  no_table.drop_tensor = "normalizer.action_quantiles";
  expect_rejected(no_table, "'normalizer.action_quantiles' is missing");
  testing::TinyModel short_table = cdf;
  short_table.metadata_overrides = {{"normalizer_quantiles", "8"}};
  expect_rejected(short_table, "normalizer.state_quantiles");
  testing::TinyModel stray = cdf;
  stray.metadata_overrides = {{"normalizer", "minmax"}};
  expect_rejected(stray, "unexpected tensor");

  expect_rejected(with_meta("format_version", "6"), "format version 6");
  // Format 5: default.fast_numerics (0 or 1), read as 0 from older files.
  for (const char* mode : {"0", "1"}) {
    testing::TinyModel v5;
    v5.metadata_overrides = {{"format_version", "5"}, {"default.max_plan_ms", "0"}, {"fixed_state_dims", ""},
                             {"default.fast_numerics", mode}};
    mpd_model* m5 = nullptr;
    const std::vector<uint8_t> v5_bytes = testing::write_model(v5);
    CHECK(mpd_model_load_memory(v5_bytes.data(), v5_bytes.size(), &m5, nullptr, 0) == MPD_OK);
    mpd_options o5;
    CHECK(mpd_model_default_options(m5, &o5) == MPD_OK && o5.fast_numerics == static_cast<uint32_t>(mode[0] - '0'));
    mpd_model_free(m5);
  }
  testing::TinyModel v5_bad;
  v5_bad.metadata_overrides = {{"format_version", "5"}, {"default.max_plan_ms", "0"}, {"fixed_state_dims", ""},
                               {"default.fast_numerics", "2"}};
  expect_rejected(v5_bad, "fast_numerics");
  // Format 4: fixed_state_dims ("" or increasing state dimensions), required from version 4, refused before.
  for (const char* dims : {"", "0", "0,2"}) {
    testing::TinyModel v4;
    v4.metadata_overrides = {{"format_version", "4"}, {"default.max_plan_ms", "0"}, {"fixed_state_dims", dims}};
    CHECK(load(testing::write_model(v4), &message) == MPD_OK);
  }
  for (const char* dims : {"2,0", "3", "0,,1", " 1", "+1", "1,1", "a"}) {
    testing::TinyModel v4;
    v4.metadata_overrides = {{"format_version", "4"}, {"default.max_plan_ms", "0"}, {"fixed_state_dims", dims}};
    expect_rejected(v4, "'fixed_state_dims'");
  }
  testing::TinyModel v4_without;
  v4_without.metadata_overrides = {{"format_version", "4"}, {"default.max_plan_ms", "0"}};
  expect_rejected(v4_without, "'fixed_state_dims' is missing");
  expect_rejected(with_meta("fixed_state_dims", "0"), "added in format version 4");
  expect_rejected(with_meta("prediction", "velocity"), "'prediction'");
  expect_rejected(with_meta("prediction", "<erase>"), "'prediction' is missing");
  expect_rejected(with_meta("normalizer", "zscore"), "'normalizer'");
  expect_rejected(with_meta("default.temperature", "0"), "temperature");
  expect_rejected(with_meta("default.temperature", "1.5"), "temperature");
  expect_rejected(with_meta("default.warm_start_level", "5"), "warm_start_level");  // K = 5
  expect_rejected(with_meta("default.dynamics_guidance", "-1"), "dynamics_guidance");
  expect_rejected(with_meta("format", "other"), "format");
  expect_rejected(with_meta("schedule", "linear"), "schedule");
  expect_rejected(with_meta("horizon", "<erase>"), "'horizon' is missing");
  expect_rejected(with_meta("horizon", "5"), "planner.0.weight");  // shapes no longer match
  expect_rejected(with_meta("width", "abc"), "'width' must be an integer");
  expect_rejected(with_meta("cond_dim", "2"), "cond_dim");
  expect_rejected(with_meta("default.dynamics_weight", "1.5"), "dynamics_weight");
  expect_rejected(with_meta("default.actions_per_plan", "9"), "actions_per_plan");
  testing::TinyModel dropped;
  dropped.drop_tensor = "dynamics.1.bias";
  expect_rejected(dropped, "'dynamics.1.bias' is missing");
  testing::TinyModel extra;
  extra.extra_tensor = "planner.9.weight";
  expect_rejected(extra, "unexpected tensor 'planner.9.weight'");
  testing::TinyModel no_cost_net;
  no_cost_net.has_cost = true;
  no_cost_net.drop_tensor = "cost.0.weight";
  expect_rejected(no_cost_net, "cost.0.weight");

  // Hand-made container faults.
  {
    std::vector<uint8_t> bytes = good;
    bytes[0] = 0xff, bytes[1] = 0xff, bytes[2] = 0xff;  // header length past the end
    CHECK(load(bytes, &message) == MPD_ERR_BAD_MODEL_FILE && message.find("header length") != std::string::npos);
  }
  {
    std::vector<uint8_t> bytes = good;
    const std::string header(bytes.begin() + 8, bytes.begin() + 200);
    const size_t at = header.find("\"F32\"");
    if (at != std::string::npos) {
      std::memcpy(bytes.data() + 8 + at, "\"F16\"", 5);
      CHECK(load(bytes, &message) == MPD_ERR_BAD_MODEL_FILE && message.find("dtype is F16") != std::string::npos);
    }
  }
  {
    std::vector<uint8_t> bytes = good;
    bytes.push_back(0);  // a byte no tensor covers
    CHECK(load(bytes, &message) == MPD_ERR_BAD_MODEL_FILE && message.find("tensors cover") != std::string::npos);
  }
  {
    std::vector<uint8_t> bytes = good;
    // A NaN weight in the data section (last 4 bytes belong to some tensor).
    const uint32_t nan_bits = 0x7fc00000u;
    std::memcpy(bytes.data() + bytes.size() - 4, &nan_bits, 4);
    CHECK(load(bytes, &message) == MPD_ERR_BAD_MODEL_FILE && message.find("NaN") != std::string::npos);
  }
  CHECK(mpd_model_load_memory(nullptr, 10, &model, nullptr, 0) == MPD_ERR_NULL_POINTER);
  CHECK(mpd_model_load_memory(good.data(), good.size(), nullptr, nullptr, 0) == MPD_ERR_NULL_POINTER);
  CHECK(mpd_model_load("/nonexistent/model.safetensors", &model, nullptr, 0) == MPD_ERR_IO && model == nullptr);

  // Every truncation is rejected (none loads, none crashes).
  int truncated_loaded = 0;
  for (size_t n = 0; n < good.size(); n += (n < 4096 ? 1 : 97)) {
    std::vector<uint8_t> bytes(good.begin(), good.begin() + static_cast<long>(n));
    if (load(bytes, &message) == MPD_OK) ++truncated_loaded;
  }
  CHECK(truncated_loaded == 0);

  // Random corruption of header bytes: either a clean rejection or (for harmless bytes such as
  // padding spaces or weight bits) a valid load; never a crash.
  uint32_t rng = 12345;
  int rejected = 0, loaded = 0;
  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | good[static_cast<size_t>(i)];
  for (int trial = 0; trial < 3000; ++trial) {
    std::vector<uint8_t> bytes = good;
    const int flips = 1 + trial % 3;
    for (int f = 0; f < flips; ++f) {
      rng = rng * 1664525u + 1013904223u;
      const size_t at = 8 + (rng >> 8) % header_size;
      bytes[at] = static_cast<uint8_t>(rng & 0xff);
    }
    const mpd_status s = load(bytes, &message);
    CHECK(s == MPD_OK || s == MPD_ERR_BAD_MODEL_FILE);
    (s == MPD_OK ? loaded : rejected)++;
  }
  std::printf("corrupted headers: %d rejected, %d loaded\n", rejected, loaded);
  CHECK(rejected > 2500);

  // The unet family: a file loads and names its family; the CPU backend takes it, CUDA does not
  // (yet); every listed tensor, its shape and the unet sizes are checked.
  testing::TinyModel unet;
  unet.architecture = "unet";
  const std::vector<uint8_t> unet_bytes = testing::write_model(unet);
  CHECK(mpd_model_load_memory(unet_bytes.data(), unet_bytes.size(), &model, nullptr, 0) == MPD_OK);
  CHECK(mpd_model_get_info(model, &info) == MPD_OK);
  CHECK(info.architecture == MPD_ARCH_UNET && info.width == 0 && info.layers == 0);
  mpd_workspace* ws = nullptr;
  CHECK(mpd_workspace_create(model, MPD_BACKEND_CUDA, 4, 1, &ws) == MPD_ERR_NOT_AVAILABLE && ws == nullptr);
  CHECK(mpd_workspace_create(model, MPD_BACKEND_CPU, 4, 1, &ws) == MPD_OK);
  mpd_workspace_free(ws);
  mpd_model_free(model);
  testing::TinyModel broken_unet = unet;
  broken_unet.drop_tensor = "planner.up.0.2.weight";
  expect_rejected(broken_unet, "tensor 'planner.up.0.2.weight' is missing");
  broken_unet = unet;
  broken_unet.extra_tensor = "dynamics.up.1.0.first.conv.weight";
  expect_rejected(broken_unet, "unexpected tensor 'dynamics.up.1.0.first.conv.weight'");
  broken_unet = unet;
  broken_unet.metadata_overrides["unet_mults"] = "1,2,4,8";  // H = 4 cannot be halved three times
  expect_rejected(broken_unet, "not divisible by 8");
  broken_unet = unet;
  broken_unet.metadata_overrides["unet_dim"] = "12";  // 12 channels in 8 GroupNorm groups
  expect_rejected(broken_unet, "divisible by 8 (GroupNorm groups)");
  broken_unet = unet;
  broken_unet.metadata_overrides["unet_mults"] = "1,,2";
  expect_rejected(broken_unet, "comma-separated integers");
  expect_rejected(with_meta("architecture", "transformer"), "expected 'mlp' or 'unet'");
  return check::exit_code();
}

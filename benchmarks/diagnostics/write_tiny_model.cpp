// Writes the C++ tests' tiny model (tests/cpp/model_writer.h, the one tests/cpp/cuda_plan_test.cpp
// plans) to a file, so the Python tools can measure on exactly that model:
//   mpd_write_tiny_model out.safetensors [cost] [unet] [sample] [bf16]
// sample: sample-prediction, CDF normalizer; bf16: the unet of cuda_plan_test.cpp's fast-mode check
// (16 channels, H = 16, every weight a bfloat16 value: its tensor-core layers).
#include <cstdio>
#include <cstring>

#include "model_writer.h"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s OUT.safetensors [cost] [unet] [sample] [bf16]\n", argv[0]);
    return 2;
  }
  testing::TinyModel m;
  for (int i = 2; i < argc; ++i) {
    if (std::strcmp(argv[i], "cost") == 0) m.has_cost = true;
    if (std::strcmp(argv[i], "unet") == 0) m.architecture = "unet";
    if (std::strcmp(argv[i], "sample") == 0) m.prediction = "sample", m.quantiles = 9;
    if (std::strcmp(argv[i], "bf16") == 0) m.architecture = "unet", m.unet_dim = 16, m.horizon = 16, m.bf16_values = true;
  }
  const std::vector<uint8_t> bytes = testing::write_model(m);
  std::FILE* f = std::fopen(argv[1], "wb");
  if (f == nullptr || std::fwrite(bytes.data(), 1, bytes.size(), f) != bytes.size()) return 1;
  return std::fclose(f) == 0 ? 0 : 1;
}

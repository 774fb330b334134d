// The tensor list of the unet family, one entry per parameter of the PyTorch module
// (python/mpdiffuser/models/unet.py), so the reader can check a file tensor by tensor.
#include <string>
#include <utility>
#include <vector>

#include "format/model_file.h"

namespace mpd {

namespace {

using Layout = std::vector<std::pair<std::string, std::vector<int64_t>>>;

void linear(Layout* out, const std::string& p, int64_t in, int64_t o) {
  out->push_back({p + ".weight", {o, in}});
  out->push_back({p + ".bias", {o}});
}

void conv(Layout* out, const std::string& p, int64_t in, int64_t o, int64_t kernel) {
  out->push_back({p + ".weight", {o, in, kernel}});
  out->push_back({p + ".bias", {o}});
}

void norm(Layout* out, const std::string& p, int64_t channels) {
  out->push_back({p + ".weight", {channels}});
  out->push_back({p + ".bias", {channels}});
}

// conv k5 -> GroupNorm -> FiLM (Linear context -> context, SiLU, Linear -> 2 out).
void film_conv(Layout* out, const std::string& p, int64_t in, int64_t o, int64_t context) {
  conv(out, p + ".conv", in, o, 5);
  norm(out, p + ".norm", o);
  linear(out, p + ".film.0", context, context);
  linear(out, p + ".film.2", context, 2 * o);
}

void residual_block(Layout* out, const std::string& p, int64_t in, int64_t o, int64_t context) {
  film_conv(out, p + ".first", in, o, context);
  film_conv(out, p + ".second", o, o, context);
  if (in != o) conv(out, p + ".skip", in, o, 1);
}

}  // namespace

Layout unet_layout(const ModelConfig& c, const std::string& net) {
  const int64_t dim = c.unet_dim, e = c.unet_embed_dim, D = c.window_dim();
  const int64_t in = D, out_channels = net == "planner" ? D : c.state_dim;
  const int64_t context = dim + 2 * e;  // time, x_0 and condition embeddings
  Layout out;
  const std::string p = net + ".";
  linear(&out, p + "time.0", dim, 4 * dim);
  linear(&out, p + "time.2", 4 * dim, dim);
  const int64_t condition_dims[2] = {c.state_dim, c.cond_dim};
  for (int i = 0; i < 2; ++i) {
    linear(&out, p + "embeds." + std::to_string(i) + ".0", condition_dims[i], 4 * e);
    linear(&out, p + "embeds." + std::to_string(i) + ".2", 4 * e, e);
  }
  std::vector<int64_t> dims;
  for (int m : c.unet_mults) dims.push_back(dim * m);
  int64_t channels = in;
  for (size_t i = 0; i < dims.size(); ++i) {
    const std::string level = p + "down." + std::to_string(i) + ".";
    residual_block(&out, level + "0", channels, dims[i], context);
    residual_block(&out, level + "1", dims[i], dims[i], context);
    if (i + 1 < dims.size()) conv(&out, level + "2.conv", dims[i], dims[i], 3);
    channels = dims[i];
  }
  residual_block(&out, p + "middle.0", channels, channels, context);
  residual_block(&out, p + "middle.1", channels, channels, context);
  // The up path pairs each level with the kept output of the level below it, deepest first.
  for (size_t j = 0; j + 1 < dims.size(); ++j) {
    const int64_t d = dims[dims.size() - 2 - j], skip = dims[dims.size() - 1 - j];
    const std::string level = p + "up." + std::to_string(j) + ".";
    residual_block(&out, level + "0", channels + skip, d, context);
    residual_block(&out, level + "1", d, d, context);
    out.push_back({level + "2.weight", {d, d, 4}});  // ConvTranspose1d: [in, out, kernel]
    out.push_back({level + "2.bias", {d}});
    channels = d;
  }
  conv(&out, p + "head.0", channels, dim, 5);
  norm(&out, p + "head.1", dim);
  conv(&out, p + "head.3", dim, out_channels, 1);
  return out;
}

}  // namespace mpd

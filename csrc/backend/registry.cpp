// The registry: the one list of backends (backend/backend.h, BackendRecord).
#include "backend/backend.h"

namespace mpd {

namespace {

const BackendRecord* const kRecords[kBackendCount] = {&cpu::kRecord, &cuda::kRecord};

}  // namespace

const BackendRecord* find_backend(int id) {
  for (const BackendRecord* r : kRecords) {
    if (static_cast<int>(r->id) == id) return r;
  }
  return nullptr;
}

const BackendRecord* find_backend(const std::string& name) {
  for (const BackendRecord* r : kRecords) {
    if (name == r->name) return r;
  }
  return nullptr;
}

std::string backend_names() {
  std::string out;
  for (int i = 0; i < kBackendCount; ++i) {
    out += (i == 0 ? "'" : i + 1 == kBackendCount ? " or '" : ", '") + std::string(kRecords[i]->name) + "'";
  }
  return out;
}

}  // namespace mpd

#ifndef MPD_WITH_CUDA
namespace mpd::cuda {

// The library was built without CUDA: the backend is listed by its name and never available.
const BackendRecord kRecord{MPD_BACKEND_CUDA, "cuda", false, nullptr, nullptr, nullptr, [] { return false; }, nullptr};

}  // namespace mpd::cuda
#endif

// SHA-256 (FIPS 180-4), for the model file's content digest (design section "Model file"). Written
// here so the firmware library takes no dependency; checked against the FIPS test vectors
// (tests/cpp/sha256_test.cpp) and against Python's hashlib through the model files it verifies.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

namespace mpd {

class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t size);
  void update_u64(uint64_t value);             // 8 bytes, little-endian
  void update_string(const std::string& text);  // update_u64(size), then the bytes
  std::array<uint8_t, 32> finish();             // the digest; the object is spent afterwards
  static std::string hex(const std::array<uint8_t, 32>& digest);

 private:
  void block(const uint8_t* p);
  uint32_t h_[8];
  uint8_t buffer_[64];
  size_t buffered_ = 0;
  uint64_t length_ = 0;  // bytes hashed so far
};

}  // namespace mpd

// SHA-256: the FIPS 180-4 example digests, and a message fed in pieces equals the same message
// fed at once (block boundaries inside and across update calls).
#include <algorithm>
#include <string>

#include "check.h"
#include "format/sha256.h"

namespace {
std::string digest(const std::string& message) {
  mpd::Sha256 h;
  h.update(message.data(), message.size());
  return mpd::Sha256::hex(h.finish());
}
}  // namespace

int main() {
  CHECK(digest("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(digest("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(digest("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq") ==
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  const std::string million(1000000, 'a');
  CHECK(digest(million) == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  for (size_t piece : {1u, 3u, 63u, 64u, 65u, 1000u}) {
    mpd::Sha256 h;
    for (size_t i = 0; i < million.size(); i += piece) h.update(million.data() + i, std::min(piece, million.size() - i));
    CHECK(mpd::Sha256::hex(h.finish()) == digest(million));
  }
  mpd::Sha256 a, b;  // update_string is the length (u64, little-endian) and then the bytes
  a.update_string("xy");
  const unsigned char prefix[8] = {2, 0, 0, 0, 0, 0, 0, 0};
  b.update(prefix, 8);
  b.update("xy", 2);
  CHECK(a.finish() == b.finish());
  return check::exit_code();
}

// A strict, small JSON reader for the safetensors header (load time only; never on the hot path).
// Accepts RFC 8259 JSON: objects, arrays, strings with escapes, numbers, true, false, null.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace mpd::json {

struct Value {
  enum class Kind { kNull, kBool, kNumber, kString, kArray, kObject };
  Kind kind = Kind::kNull;
  bool boolean = false;
  double number = 0.0;
  bool is_integer = false;  // the number was written without fraction or exponent
  int64_t integer = 0;      // its value when is_integer and it fits
  std::string string;
  std::vector<Value> array;
  std::vector<std::pair<std::string, Value>> object;  // in file order

  // The member named `key` of an object, or nullptr.
  const Value* find(const std::string& key) const;
};

// Parses text[0, size) as one JSON value (surrounding whitespace allowed). On failure returns
// false and sets *error to what is wrong and where.
bool parse(const char* text, size_t size, Value* out, std::string* error);

}  // namespace mpd::json

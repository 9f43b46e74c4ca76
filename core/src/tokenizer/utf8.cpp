// UTF-8 validation and U+FFFD replacement with the maximal-subpart rule (Unicode 15, §3.9,
// "U+FFFD Substitution of Maximal Subparts"), which Python's errors="replace" follows: an
// ill-formed sequence is replaced by one U+FFFD per maximal prefix of a well-formed sequence,
// and decoding resumes at the first byte that could not continue it.
#include <cstdint>
#include <cstring>

#include "tokenizer/tokenizer.h"

namespace kvc::utf8 {
namespace {

// Length in bytes of the well-formed sequence starting at s[i], or 0 if it is ill-formed;
// in that case `*subpart` receives the length of its maximal subpart (at least 1).
size_t sequence_length(const unsigned char* s, size_t n, size_t i, size_t* subpart) {
  const unsigned char b = s[i];
  size_t len;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (b >= 0xC2 && b <= 0xDF) {
    len = 2;
  } else if (b >= 0xE0 && b <= 0xEF) {
    len = 3;
    if (b == 0xE0) lo = 0xA0;  // no overlongs
    if (b == 0xED) hi = 0x9F;  // no surrogates
  } else if (b >= 0xF0 && b <= 0xF4) {
    len = 4;
    if (b == 0xF0) lo = 0x90;  // no overlongs
    if (b == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
  } else {
    *subpart = 1;  // a stray continuation byte, C0, C1 or F5..FF
    return 0;
  }
  size_t k = 1;
  for (; k < len; ++k) {
    if (i + k >= n) break;
    const unsigned char c = s[i + k];
    const unsigned char l = (k == 1) ? lo : 0x80, h = (k == 1) ? hi : 0xBF;
    if (c < l || c > h) break;
  }
  if (k == len) return len;
  *subpart = k;
  return 0;
}

// Index of the first byte of the first ill-formed sequence, or n.
size_t first_invalid(const unsigned char* s, size_t n) {
  size_t i = 0;
  while (i < n) {
    // ASCII fast path, eight bytes at a time.
    if (i + 8 <= n) {
      uint64_t w;
      std::memcpy(&w, s + i, 8);
      if ((w & 0x8080808080808080ull) == 0) {
        i += 8;
        continue;
      }
    }
    if (s[i] < 0x80) {
      ++i;
      continue;
    }
    size_t subpart = 0;
    const size_t len = sequence_length(s, n, i, &subpart);
    if (len == 0) return i;
    i += len;
  }
  return n;
}

}  // namespace

bool is_valid(std::string_view text) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  return first_invalid(s, text.size()) == text.size();
}

std::string replace_invalid(std::string_view text) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  size_t i = first_invalid(s, n);
  std::string out;
  out.reserve(n + 16);
  out.append(text.data(), i);
  while (i < n) {
    if (s[i] < 0x80) {
      out.push_back(static_cast<char>(s[i++]));
      continue;
    }
    size_t subpart = 0;
    const size_t len = sequence_length(s, n, i, &subpart);
    if (len != 0) {
      out.append(text.data() + i, len);
      i += len;
    } else {
      out.append("\xEF\xBF\xBD");  // U+FFFD
      i += subpart;
    }
  }
  return out;
}

}  // namespace kvc::utf8

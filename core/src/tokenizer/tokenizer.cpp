// Byte-level BPE tokenizer compatible with Hugging Face `tokenizers` (see tokenizer.h).
//
// Encoding follows the library's pipeline step by step, because each step changes ids:
//   1. invalid UTF-8 -> U+FFFD (the Python binding only ever sees decoded str);
//   2. split out added tokens whose `normalized` is false, on the raw text;
//   3. normalize each remaining piece, then split out the `normalized: true` added tokens
//      (matched against their normalized content) — GPT-NeoX's runs of 2–24 spaces;
//   4. ByteLevel pre-tokenizer: the GPT-2 split pattern on each remaining piece;
//   5. BPE on each pre-token, on byte ids, with the library's merge order (lowest rank first,
//      then leftmost, via a heap: O(n log n) in the word length).
// Added tokens use leftmost-longest matching, as the library's Aho-Corasick automaton does.
#include "tokenizer/tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <utf8proc.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>
#include <unordered_map>

#include "common/error.h"

namespace kvc {
namespace {

using json = nlohmann::json;

// ---- GPT-2 byte <-> character mapping ---------------------------------------------------------
// Printable bytes map to themselves; the other 68 bytes map to U+0100.. in byte order, so every
// byte has a visible character and a token is a string of such characters.
struct ByteLevelTable {
  std::array<uint32_t, 256> byte_to_cp{};
  std::array<int16_t, 512> cp_to_byte{};  // all mapped code points are < 0x144

  ByteLevelTable() {
    cp_to_byte.fill(-1);
    uint32_t extra = 0;
    for (uint32_t b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      byte_to_cp[b] = printable ? b : 256 + extra++;
      cp_to_byte[byte_to_cp[b]] = static_cast<int16_t>(b);
    }
  }
};

const ByteLevelTable& byte_level() {
  static const ByteLevelTable table;
  return table;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// Bytes a token stands for under the ByteLevel decoder: its characters mapped back to bytes
// if all of them are byte-level characters, else its own UTF-8 (e.g. an added "   ").
std::string token_bytes(const std::string& token) {
  const auto& table = byte_level();
  std::string out;
  utf8proc_ssize_t i = 0;
  const auto* s = reinterpret_cast<const utf8proc_uint8_t*>(token.data());
  const auto n = static_cast<utf8proc_ssize_t>(token.size());
  while (i < n) {
    utf8proc_int32_t cp;
    const utf8proc_ssize_t len = utf8proc_iterate(s + i, n - i, &cp);
    if (len <= 0 || cp < 0 || cp >= static_cast<utf8proc_int32_t>(table.cp_to_byte.size()) ||
        table.cp_to_byte[cp] < 0)
      return token;
    out.push_back(static_cast<char>(table.cp_to_byte[cp]));
    i += len;
  }
  return out;
}

// ---- Merge table: (left id, right id) -> (rank, merged id), open addressing ------------------
class PairMap {
 public:
  struct Entry {
    uint64_t key;
    int32_t rank;
    int32_t new_id;
  };

  void reserve(size_t n) {
    size_t cap = 16;
    while (cap < 2 * n) cap <<= 1;
    slots_.assign(cap, Entry{kEmpty, 0, 0});
    mask_ = cap - 1;
  }
  // Later entries replace earlier ones, like the library's HashMap built from the list.
  void insert_or_assign(int32_t a, int32_t b, int32_t rank, int32_t new_id) {
    const uint64_t key = make_key(a, b);
    size_t i = hash(key) & mask_;
    while (slots_[i].key != kEmpty && slots_[i].key != key) i = (i + 1) & mask_;
    slots_[i] = Entry{key, rank, new_id};
  }
  const Entry* find(int32_t a, int32_t b) const {
    const uint64_t key = make_key(a, b);
    size_t i = hash(key) & mask_;
    while (true) {
      const Entry& e = slots_[i];
      if (e.key == key) return &e;
      if (e.key == kEmpty) return nullptr;
      i = (i + 1) & mask_;
    }
  }

 private:
  static constexpr uint64_t kEmpty = ~0ull;
  static uint64_t make_key(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  static size_t hash(uint64_t k) { return static_cast<size_t>((k * 0x9E3779B97F4A7C15ull) >> 17); }
  std::vector<Entry> slots_;
  size_t mask_ = 0;
};

// ---- Added tokens: byte trie with leftmost-longest matching ----------------------------------
// Cost is O(text length x longest token), bounded and linear in the text.
class AddedTrie {
 public:
  bool empty() const { return nodes_.size() == 1; }

  void add(std::string_view s, int32_t id) {
    if (s.empty()) return;
    int32_t node = 0;
    for (unsigned char c : s) {
      int32_t child = find_child(node, c);
      if (child < 0) {
        child = static_cast<int32_t>(nodes_.size());
        nodes_[node].children.push_back({c, child});
        nodes_.emplace_back();
      }
      node = child;
    }
    if (nodes_[node].id < 0) nodes_[node].id = id;  // the first pattern wins on duplicates
    first_[static_cast<unsigned char>(s[0])] = true;
  }

  // Calls emit(piece, id) for consecutive pieces covering `text`; id is -1 for text between
  // matches. Empty pieces are not emitted.
  template <class Emit>
  void split(std::string_view text, Emit&& emit) const {
    if (empty()) {
      if (!text.empty()) emit(text, -1);
      return;
    }
    const auto* s = reinterpret_cast<const unsigned char*>(text.data());
    const size_t n = text.size();
    size_t done = 0;
    for (size_t start = 0; start < n; ++start) {
      if (!first_[s[start]]) continue;
      int32_t node = 0, best_id = -1;
      size_t best_end = 0;
      for (size_t i = start; i < n; ++i) {
        node = find_child(node, s[i]);
        if (node < 0) break;
        if (nodes_[node].id >= 0) {
          best_id = nodes_[node].id;
          best_end = i + 1;
        }
      }
      if (best_id < 0) continue;
      if (start > done) emit(text.substr(done, start - done), -1);
      emit(text.substr(start, best_end - start), best_id);
      done = best_end;
      start = best_end - 1;
    }
    if (done < n) emit(text.substr(done), -1);
  }

 private:
  struct Node {
    std::vector<std::pair<unsigned char, int32_t>> children;
    int32_t id = -1;
  };
  int32_t find_child(int32_t node, unsigned char c) const {
    for (const auto& [byte, child] : nodes_[node].children)
      if (byte == c) return child;
    return -1;
  }
  std::vector<Node> nodes_{1};
  std::array<bool, 256> first_{};
};

// ---- Per-thread state: word cache and PCRE2 match data ---------------------------------------
// Each thread keeps its own cache per tokenizer (keyed by a serial number that is never
// reused, so a freed tokenizer's cache can never be hit by a new one), so encode() needs no
// lock. Caches are bounded and a thread keeps at most kCachesPerThread of them.
constexpr size_t kMaxCachedWordBytes = 64;
constexpr size_t kMaxCachedWords = 1u << 16;
constexpr size_t kCachesPerThread = 4;

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

struct WordCache {
  uint64_t owner = 0;
  std::unordered_map<std::string, std::pair<uint32_t, uint32_t>, StringHash, std::equal_to<>>
      words;  // word bytes -> (offset, count) in ids
  std::vector<int32_t> ids;

  const std::pair<uint32_t, uint32_t>* find(std::string_view word) const {
    auto it = words.find(word);
    return it == words.end() ? nullptr : &it->second;
  }
  void insert(std::string_view word, const int32_t* first, size_t count) {
    if (words.size() >= kMaxCachedWords) {
      words.clear();
      ids.clear();
    }
    words.emplace(std::string(word), std::make_pair(static_cast<uint32_t>(ids.size()),
                                                    static_cast<uint32_t>(count)));
    ids.insert(ids.end(), first, first + count);
  }
};

struct ThreadState {
  std::vector<std::unique_ptr<WordCache>> caches;  // most recently used first
  pcre2_match_data* match = nullptr;
  // Scratch space of the BPE merge loop.
  struct Symbol {
    int32_t id, prev, next, len;
  };
  struct Merge {
    int32_t rank, pos, new_id;
  };
  std::vector<Symbol> symbols;
  std::vector<Merge> heap;
  std::vector<int32_t> word_ids;

  ~ThreadState() {
    if (match) pcre2_match_data_free(match);
  }
  WordCache& cache_for(uint64_t serial) {
    for (size_t i = 0; i < caches.size(); ++i) {
      if (caches[i]->owner == serial) {
        if (i != 0) std::rotate(caches.begin(), caches.begin() + i, caches.begin() + i + 1);
        return *caches[0];
      }
    }
    if (caches.size() >= kCachesPerThread) caches.pop_back();
    caches.insert(caches.begin(), std::make_unique<WordCache>());
    caches[0]->owner = serial;
    return *caches[0];
  }
};

ThreadState& thread_state() {
  thread_local ThreadState state;
  return state;
}

std::atomic<uint64_t> g_next_serial{1};

// The GPT-2 pattern of the ByteLevel pre-tokenizer:
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// `tokenizers` runs it with Oniguruma, whose \s is Unicode White_Space. PCRE2's \s under UCP
// differs (it includes U+180E and follows the Z category), so \s is spelled out as the
// White_Space set.
constexpr const char* kWhite =
    "\\t\\n\\x{0B}\\f\\r\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}"
    "\\x{202F}\\x{205F}\\x{3000}";

std::string gpt2_pattern() {
  const std::string ws = kWhite;
  return "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" + ws + "\\p{L}\\p{N}]+|[" + ws +
         "]+(?![^" + ws + "])|[" + ws + "]+";
}

// ---- JSON field access with messages that name the field -------------------------------------
struct Loader {
  const std::string& origin;

  [[noreturn]] void format_error(const std::string& field, const std::string& what) const {
    fail(KVC_ERR_FORMAT, origin + ": " + field + ": " + what);
  }
  [[noreturn]] void unsupported(const std::string& field, const std::string& what) const {
    fail(KVC_ERR_UNSUPPORTED, origin + ": " + field + ": " + what);
  }
  const json& member(const json& obj, const std::string& parent, const char* key) const {
    auto it = obj.find(key);
    if (it == obj.end()) format_error(parent + key, "missing");
    return *it;
  }
  // Optional member: nullptr if absent or null.
  const json* optional(const json& obj, const char* key) const {
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) return nullptr;
    return &*it;
  }
  bool optional_bool(const json& obj, const std::string& parent, const char* key,
                     bool fallback) const {
    const json* v = optional(obj, key);
    if (!v) return fallback;
    if (!v->is_boolean()) format_error(parent + key, "expected true or false, got " + v->dump());
    return v->get<bool>();
  }
  std::string type_of(const json& obj, const std::string& field) const {
    if (!obj.is_object()) format_error(field, "expected an object, got " + obj.dump());
    const json& t = member(obj, field + ".", "type");
    if (!t.is_string()) format_error(field + ".type", "expected a string, got " + t.dump());
    return t.get<std::string>();
  }
};

enum class NormalForm { kNFC, kNFD, kNFKC, kNFKD };

}  // namespace

// ---- Implementation --------------------------------------------------------------------------
struct Tokenizer::Impl {
  uint64_t serial = 0;

  // Model.
  std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>> vocab;  // model vocab
  std::array<int32_t, 256> byte_id{};  // id of each single-byte token, -1 if absent
  PairMap merges;
  int32_t unk_id = -1;
  std::string unk_token;
  bool fuse_unk = false;
  bool ignore_merges = false;

  // Added tokens.
  std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>> added;
  AddedTrie raw_trie, normalized_trie;

  std::vector<NormalForm> normalizers;
  bool add_prefix_space = false;
  pcre2_code* split = nullptr;  // null when use_regex is false
  bool split_jit = false;

  // Per id: the token string, the bytes it decodes to, and whether the id exists.
  std::vector<std::string> id_token, id_bytes;
  std::vector<uint8_t> id_present;

  ~Impl() {
    if (split) pcre2_code_free(split);
  }

  // Loading, one section of tokenizer.json each (load_json calls them in this order).
  int32_t load_model(const Loader& L, const json& root);  // returns the largest id
  void load_pre_tokenizer(const Loader& L, const json& root);
  struct Added {
    std::string content;
    int32_t id;
    bool normalized, special;
  };
  std::vector<Added> load_added_tokens(const Loader& L, const json& root, int32_t* max_id);
  void build_id_tables(const std::vector<Added>& added_list, int32_t max_id);

  std::string_view normalize(std::string_view text, std::string& storage) const;
  void pre_tokenize_and_model(std::string_view piece, ThreadState& ts, WordCache& cache,
                              std::vector<int32_t>& out) const;
  void model_word(std::string_view word, ThreadState& ts, WordCache& cache,
                  std::vector<int32_t>& out) const;
  void bpe(std::string_view word, ThreadState& ts, std::vector<int32_t>& out) const;
};

std::string_view Tokenizer::Impl::normalize(std::string_view text, std::string& storage) const {
  std::string_view current = text;
  for (NormalForm form : normalizers) {
    // Fast paths: ASCII is invariant under all four forms, and text whose code points are all
    // below U+0300 is already in NFC (no combining marks, no composable pairs).
    const auto* s = reinterpret_cast<const unsigned char*>(current.data());
    const unsigned char limit = form == NormalForm::kNFC ? 0xCC : 0x80;
    if (std::all_of(s, s + current.size(), [&](unsigned char c) { return c < limit; })) continue;
    int options = UTF8PROC_STABLE;
    switch (form) {
      case NormalForm::kNFC: options |= UTF8PROC_COMPOSE; break;
      case NormalForm::kNFD: options |= UTF8PROC_DECOMPOSE; break;
      case NormalForm::kNFKC: options |= UTF8PROC_COMPOSE | UTF8PROC_COMPAT; break;
      case NormalForm::kNFKD: options |= UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT; break;
    }
    utf8proc_uint8_t* result = nullptr;
    const utf8proc_ssize_t len =
        utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(current.data()),
                     static_cast<utf8proc_ssize_t>(current.size()), &result,
                     static_cast<utf8proc_option_t>(options));
    if (len < 0) {
      if (len == UTF8PROC_ERROR_NOMEM) throw std::bad_alloc();
      fail(KVC_ERR_INTERNAL, std::string("tokenizer: normalization failed: ") +
                                 utf8proc_errmsg(len));
    }
    storage.assign(reinterpret_cast<const char*>(result), static_cast<size_t>(len));
    std::free(result);
    current = storage;
  }
  return current;
}

void Tokenizer::Impl::pre_tokenize_and_model(std::string_view piece, ThreadState& ts,
                                             WordCache& cache, std::vector<int32_t>& out) const {
  std::string prefixed;
  if (add_prefix_space && piece.front() != ' ') {
    prefixed.reserve(piece.size() + 1);
    prefixed.push_back(' ');
    prefixed.append(piece);
    piece = prefixed;
  }
  if (!split) {
    model_word(piece, ts, cache, out);
    return;
  }
  if (!ts.match) {
    ts.match = pcre2_match_data_create(1, nullptr);
    if (!ts.match) throw std::bad_alloc();
  }
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(piece.data());
  const size_t n = piece.size();
  size_t pos = 0;
  while (pos < n) {
    const int rc = split_jit ? pcre2_jit_match(split, subject, n, pos, 0, ts.match, nullptr)
                             : pcre2_match(split, subject, n, pos, PCRE2_NO_UTF_CHECK,
                                           ts.match, nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(rc, message, sizeof message);
      fail(KVC_ERR_INTERNAL, std::string("tokenizer: split pattern failed: ") +
                                 reinterpret_cast<const char*>(message));
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(ts.match);
    const size_t start = ov[0], end = ov[1];
    // The library isolates matches and keeps the text between them as pieces too.
    if (start > pos) model_word(piece.substr(pos, start - pos), ts, cache, out);
    if (end > start) {
      model_word(piece.substr(start, end - start), ts, cache, out);
      pos = end;
    } else {
      // An empty match (impossible with the GPT-2 pattern): step over one character.
      size_t next = start + 1;
      while (next < n && (static_cast<unsigned char>(piece[next]) & 0xC0) == 0x80) ++next;
      if (next > pos) model_word(piece.substr(pos, next - pos), ts, cache, out);
      pos = next;
    }
  }
  if (pos < n) model_word(piece.substr(pos), ts, cache, out);
}

void Tokenizer::Impl::model_word(std::string_view word, ThreadState& ts, WordCache& cache,
                                 std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (ignore_merges) {
    // The library looks the whole (byte-level) word up before merging.
    std::string chars;
    for (unsigned char c : word) append_utf8(chars, byte_level().byte_to_cp[c]);
    auto it = vocab.find(chars);
    if (it != vocab.end()) {
      out.push_back(it->second);
      return;
    }
  }
  if (word.size() == 1 && byte_id[static_cast<unsigned char>(word[0])] >= 0) {
    out.push_back(byte_id[static_cast<unsigned char>(word[0])]);
    return;
  }
  const bool cacheable = word.size() <= kMaxCachedWordBytes;
  if (cacheable) {
    if (const auto* hit = cache.find(word)) {
      out.insert(out.end(), cache.ids.begin() + hit->first,
                 cache.ids.begin() + hit->first + hit->second);
      return;
    }
  }
  ts.word_ids.clear();
  bpe(word, ts, ts.word_ids);
  out.insert(out.end(), ts.word_ids.begin(), ts.word_ids.end());
  if (cacheable) cache.insert(word, ts.word_ids.data(), ts.word_ids.size());
}

// The library's Word::merge_all: a min-heap of (rank, position) over adjacent pairs; stale
// entries are recognised by re-checking that the pair at the position still merges into the
// same id. Removed symbols keep len 0 and are unlinked from the prev/next chain.
void Tokenizer::Impl::bpe(std::string_view word, ThreadState& ts,
                          std::vector<int32_t>& out) const {
  using Symbol = ThreadState::Symbol;
  using Merge = ThreadState::Merge;
  auto& sym = ts.symbols;
  sym.clear();
  // Initial symbols: one per byte. Bytes without a token become the unknown token (runs of
  // them fused if fuse_unk), or are dropped when there is no unknown token, as in the library.
  int32_t pending_unk_len = 0;
  auto push = [&](int32_t id, int32_t len) {
    const auto index = static_cast<int32_t>(sym.size());
    sym.push_back(Symbol{id, index - 1, index + 1, len});
  };
  for (unsigned char c : word) {
    const int32_t id = byte_id[c];
    if (id >= 0) {
      if (pending_unk_len) push(unk_id, pending_unk_len);
      pending_unk_len = 0;
      push(id, 1);
    } else if (!unk_token.empty()) {
      if (unk_id < 0)
        fail(KVC_ERR_FORMAT, "tokenizer: model.unk_token \"" + unk_token +
                                 "\" is needed but is not in model.vocab");
      if (pending_unk_len && !fuse_unk) {
        push(unk_id, pending_unk_len);
        pending_unk_len = 0;
      }
      pending_unk_len += 1;
    }
  }
  if (pending_unk_len) push(unk_id, pending_unk_len);
  if (sym.empty()) return;
  sym.back().next = -1;

  auto lower_priority = [](const Merge& a, const Merge& b) {
    return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos;
  };
  auto& heap = ts.heap;
  heap.clear();
  for (size_t i = 0; i + 1 < sym.size(); ++i) {
    if (const auto* m = merges.find(sym[i].id, sym[i + 1].id))
      heap.push_back(Merge{m->rank, static_cast<int32_t>(i), m->new_id});
  }
  std::make_heap(heap.begin(), heap.end(), lower_priority);
  const auto n = static_cast<int32_t>(sym.size());
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), lower_priority);
    const Merge top = heap.back();
    heap.pop_back();
    Symbol& cur = sym[top.pos];
    if (cur.len == 0 || cur.next == -1) continue;
    const int32_t right_pos = cur.next;
    const Symbol right = sym[right_pos];
    const auto* m = merges.find(cur.id, right.id);
    if (!m || m->new_id != top.new_id) continue;  // a stale entry
    cur.id = top.new_id;
    cur.len += right.len;
    cur.next = right.next;
    sym[right_pos].len = 0;
    if (right.next >= 0 && right.next < n) sym[right.next].prev = top.pos;
    if (cur.prev >= 0) {
      if (const auto* pm = merges.find(sym[cur.prev].id, cur.id)) {
        heap.push_back(Merge{pm->rank, cur.prev, pm->new_id});
        std::push_heap(heap.begin(), heap.end(), lower_priority);
      }
    }
    if (cur.next >= 0 && cur.next < n) {
      if (const auto* nm = merges.find(cur.id, sym[cur.next].id)) {
        heap.push_back(Merge{nm->rank, top.pos, nm->new_id});
        std::push_heap(heap.begin(), heap.end(), lower_priority);
      }
    }
  }
  for (const Symbol& s : sym)
    if (s.len != 0) out.push_back(s.id);
}

// ---- Loading ---------------------------------------------------------------------------------
namespace {

void parse_normalizer(const Loader& L, const json& node, const std::string& field,
                      std::vector<NormalForm>& out) {
  const std::string type = L.type_of(node, field);
  if (type == "NFC") {
    out.push_back(NormalForm::kNFC);
  } else if (type == "NFD") {
    out.push_back(NormalForm::kNFD);
  } else if (type == "NFKC") {
    out.push_back(NormalForm::kNFKC);
  } else if (type == "NFKD") {
    out.push_back(NormalForm::kNFKD);
  } else if (type == "Sequence") {
    const json& list = L.member(node, field + ".", "normalizers");
    if (!list.is_array()) L.format_error(field + ".normalizers", "expected an array");
    for (size_t i = 0; i < list.size(); ++i)
      parse_normalizer(L, list[i], field + ".normalizers[" + std::to_string(i) + "]", out);
  } else {
    L.unsupported(field + ".type", "normalizer \"" + type +
                                       "\" is not supported (supported: NFC, NFD, NFKC, NFKD, "
                                       "Sequence of these)");
  }
}

}  // namespace

std::unique_ptr<Tokenizer> Tokenizer::load_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(KVC_ERR_IO, "cannot open tokenizer file " + path + ": " + std::strerror(errno));
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) fail(KVC_ERR_IO, "cannot read tokenizer file " + path);
  return load_json(buffer.str(), path);
}

// model: a byte-level BPE vocabulary and its merges.
int32_t Tokenizer::Impl::load_model(const Loader& L, const json& root) {
  const json& model = L.member(root, "", "model");
  if (!model.is_object()) L.format_error("model", "expected an object");
  {
    const json* type = L.optional(model, "type");
    if (!type) L.format_error("model.type", "missing (expected \"BPE\")");
    if (!type->is_string()) L.format_error("model.type", "expected a string");
    if (type->get<std::string>() != "BPE")
      L.unsupported("model.type", "model \"" + type->get<std::string>() +
                                      "\" is not supported (only \"BPE\")");
  }
  if (const json* d = L.optional(model, "dropout")) {
    if (!d->is_number()) L.format_error("model.dropout", "expected a number or null");
    if (d->get<double>() != 0.0) L.unsupported("model.dropout", "BPE dropout is not supported");
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (const json* v = L.optional(model, key)) {
      if (!v->is_string()) L.format_error(std::string("model.") + key, "expected a string");
      if (!v->get<std::string>().empty())
        L.unsupported(std::string("model.") + key, "must be null or empty");
    }
  }
  if (L.optional_bool(model, "model.", "byte_fallback", false))
    L.unsupported("model.byte_fallback", "byte fallback is not supported");
  fuse_unk = L.optional_bool(model, "model.", "fuse_unk", false);
  ignore_merges = L.optional_bool(model, "model.", "ignore_merges", false);

  const json& vocab_json = L.member(model, "model.", "vocab");
  if (!vocab_json.is_object()) L.format_error("model.vocab", "expected an object of token -> id");
  int32_t max_id = -1;
  vocab.reserve(vocab_json.size());
  for (auto it = vocab_json.begin(); it != vocab_json.end(); ++it) {
    if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0 ||
        it.value().get<int64_t>() > INT32_MAX)
      L.format_error("model.vocab[\"" + it.key() + "\"]",
                     "expected a non-negative integer id, got " + it.value().dump());
    const auto id = static_cast<int32_t>(it.value().get<int64_t>());
    vocab[it.key()] = id;
    max_id = std::max(max_id, id);
  }
  if (const json* unk = L.optional(model, "unk_token")) {
    if (!unk->is_string()) L.format_error("model.unk_token", "expected a string or null");
    unk_token = unk->get<std::string>();
    auto it = vocab.find(unk_token);
    if (it != vocab.end()) unk_id = it->second;
  }
  const auto& table = byte_level();
  for (int b = 0; b < 256; ++b) {
    std::string ch;
    append_utf8(ch, table.byte_to_cp[b]);
    auto it = vocab.find(ch);
    byte_id[b] = it == vocab.end() ? -1 : it->second;
  }

  const json& merges_json = L.member(model, "model.", "merges");
  if (!merges_json.is_array()) L.format_error("model.merges", "expected an array");
  merges.reserve(merges_json.size());
  for (size_t i = 0; i < merges_json.size(); ++i) {
    const std::string field = "model.merges[" + std::to_string(i) + "]";
    const json& m = merges_json[i];
    std::string left, right;
    if (m.is_string()) {
      // Legacy form "left right": the library splits at the first space.
      const std::string& s = m.get_ref<const std::string&>();
      const size_t space = s.find(' ');
      if (space == std::string::npos)
        L.format_error(field, "expected \"left right\", got " + m.dump());
      left = s.substr(0, space);
      right = s.substr(space + 1);
      if (right.find(' ') != std::string::npos)
        L.format_error(field, "expected exactly two parts, got " + m.dump());
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      left = m[0].get<std::string>();
      right = m[1].get<std::string>();
    } else {
      L.format_error(field, "expected \"left right\" or [\"left\", \"right\"], got " + m.dump());
    }
    auto find = [&](const std::string& token) {
      auto it = vocab.find(token);
      if (it == vocab.end())
        L.format_error(field, "token \"" + token + "\" is not in model.vocab");
      return it->second;
    };
    merges.insert_or_assign(find(left), find(right), static_cast<int32_t>(i),
                                  find(left + right));
  }

  return max_id;
}

// pre_tokenizer: ByteLevel, with the GPT-2 split pattern unless use_regex is false.
void Tokenizer::Impl::load_pre_tokenizer(const Loader& L, const json& root) {
  const json* pre = L.optional(root, "pre_tokenizer");
  if (!pre) L.unsupported("pre_tokenizer", "null is not supported (expected ByteLevel)");
  const std::string type = L.type_of(*pre, "pre_tokenizer");
  if (type != "ByteLevel")
    L.unsupported("pre_tokenizer.type", "pre-tokenizer \"" + type +
                                            "\" is not supported (only \"ByteLevel\")");
  add_prefix_space = L.optional_bool(*pre, "pre_tokenizer.", "add_prefix_space", true);
  if (L.optional_bool(*pre, "pre_tokenizer.", "use_regex", true)) {
    const std::string pattern = gpt2_pattern();
    int error = 0;
    PCRE2_SIZE offset = 0;
    split = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.c_str()), PCRE2_ZERO_TERMINATED,
                          PCRE2_UTF | PCRE2_UCP, &error, &offset, nullptr);
    if (!split) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(error, message, sizeof message);
      fail(KVC_ERR_INTERNAL, std::string("tokenizer: cannot compile the split pattern: ") +
                                 reinterpret_cast<const char*>(message));
    }
    split_jit = pcre2_jit_compile(split, PCRE2_JIT_COMPLETE) == 0;
  }
}

// added_tokens: ids as the library assigns them: a token already in the model vocabulary
// keeps its id, a new one gets the next id after the vocabulary. A file whose recorded id
// differs is inconsistent (the library only warns); refuse it rather than guess.
std::vector<Tokenizer::Impl::Added> Tokenizer::Impl::load_added_tokens(const Loader& L,
                                                                       const json& root,
                                                                       int32_t* max_id) {
  std::vector<Added> added_list;
  if (const json* list = L.optional(root, "added_tokens")) {
    if (!list->is_array()) L.format_error("added_tokens", "expected an array");
    const auto model_size = static_cast<int32_t>(vocab.size());
    int32_t max_added = -1;
    for (size_t i = 0; i < list->size(); ++i) {
      const std::string field = "added_tokens[" + std::to_string(i) + "]";
      const json& t = (*list)[i];
      if (!t.is_object()) L.format_error(field, "expected an object");
      const json& content = L.member(t, field + ".", "content");
      if (!content.is_string()) L.format_error(field + ".content", "expected a string");
      const json& id = L.member(t, field + ".", "id");
      if (!id.is_number_integer()) L.format_error(field + ".id", "expected an integer");
      for (const char* flag : {"single_word", "lstrip", "rstrip"})
        if (L.optional_bool(t, field + ".", flag, false))
          L.unsupported(field + "." + flag, "true is not supported");
      Added a{content.get<std::string>(), 0, L.optional_bool(t, field + ".", "normalized", true),
              L.optional_bool(t, field + ".", "special", false)};
      if (a.content.empty()) continue;  // the library ignores empty tokens
      if (auto it = added.find(a.content); it != added.end()) {
        a.id = it->second;
      } else if (auto v = vocab.find(a.content); v != vocab.end()) {
        a.id = v->second;
      } else {
        a.id = (max_added < 0) ? model_size
               : (max_added >= model_size || model_size == 0) ? max_added + 1
                                                               : model_size;
      }
      if (id.get<int64_t>() != a.id)
        L.unsupported(field + ".id", std::to_string(id.get<int64_t>()) + " for \"" + a.content +
                                         "\", but tokenizers assigns it id " +
                                         std::to_string(a.id));
      max_added = std::max(max_added, a.id);
      *max_id = std::max(*max_id, a.id);
      added[a.content] = a.id;
      added_list.push_back(std::move(a));
    }
  }
  // The library builds its automata from the special tokens first, then the others.
  for (int pass = 0; pass < 2; ++pass) {
    for (const Added& a : added_list) {
      if (a.special != (pass == 0)) continue;
      if (a.normalized) {
        std::string storage;
        normalized_trie.add(normalize(a.content, storage), a.id);
      } else {
        raw_trie.add(a.content, a.id);
      }
    }
  }
  return added_list;
}

// Per id: the token string, the bytes it decodes to, and whether the id exists.
void Tokenizer::Impl::build_id_tables(const std::vector<Added>& added_list, int32_t max_id) {
  const size_t size = static_cast<size_t>(max_id + 1);
  id_token.assign(size, std::string());
  id_bytes.assign(size, std::string());
  id_present.assign(size, 0);
  for (const auto& [token, id] : vocab) {
    id_token[id] = token;
    id_present[id] = 1;
  }
  for (const Added& a : added_list) {  // the added vocabulary takes precedence
    id_token[a.id] = a.content;
    id_present[a.id] = 1;
  }
  for (size_t id = 0; id < size; ++id)
    if (id_present[id]) id_bytes[id] = token_bytes(id_token[id]);
}

std::unique_ptr<Tokenizer> Tokenizer::load_json(std::string_view text, const std::string& origin) {
  const Loader L{origin};
  json root;
  try {
    root = json::parse(text.begin(), text.end());
  } catch (const json::exception& e) {  // parse_error, or out_of_range for a number like 1e400
    fail(KVC_ERR_FORMAT, origin + ": not valid JSON: " + e.what());
  }
  if (!root.is_object()) L.format_error("(root)", "expected a JSON object");

  auto impl = std::make_unique<Impl>();
  impl->serial = g_next_serial.fetch_add(1);
  // Settings that would change the ids of a single encode are refused rather than ignored.
  if (L.optional(root, "truncation")) L.unsupported("truncation", "must be null");
  if (L.optional(root, "padding")) L.unsupported("padding", "must be null");

  int32_t max_id = impl->load_model(L, root);
  if (const json* n = L.optional(root, "normalizer"))
    parse_normalizer(L, *n, "normalizer", impl->normalizers);
  impl->load_pre_tokenizer(L, root);
  {  // decoder (post_processor is ignored: kvc never adds special tokens)
    const json* dec = L.optional(root, "decoder");
    if (!dec) L.unsupported("decoder", "null is not supported (expected ByteLevel)");
    const std::string type = L.type_of(*dec, "decoder");
    if (type != "ByteLevel")
      L.unsupported("decoder.type",
                    "decoder \"" + type + "\" is not supported (only \"ByteLevel\")");
  }
  const std::vector<Impl::Added> added_list = impl->load_added_tokens(L, root, &max_id);
  impl->build_id_tables(added_list, max_id);
  return std::unique_ptr<Tokenizer>(new Tokenizer(std::move(impl)));
}

// ---- Public interface ------------------------------------------------------------------------
Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::~Tokenizer() = default;

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  const Impl& im = *impl_;
  std::string repaired;
  if (!utf8::is_valid(text)) {
    repaired = utf8::replace_invalid(text);
    text = repaired;
  }
  std::vector<int32_t> out;
  out.reserve(text.size() / 4 + 16);
  ThreadState& ts = thread_state();
  WordCache& cache = ts.cache_for(im.serial);
  im.raw_trie.split(text, [&](std::string_view piece, int32_t id) {
    if (id >= 0) {
      out.push_back(id);
      return;
    }
    std::string storage;
    const std::string_view normalized = im.normalize(piece, storage);
    im.normalized_trie.split(normalized, [&](std::string_view sub, int32_t sub_id) {
      if (sub_id >= 0)
        out.push_back(sub_id);
      else
        im.pre_tokenize_and_model(sub, ts, cache, out);
    });
  });
  return out;
}

std::string Tokenizer::decode(const int32_t* ids, size_t n) const {
  const Impl& im = *impl_;
  std::string bytes;
  for (size_t i = 0; i < n; ++i) {
    const int32_t id = ids[i];
    if (id < 0 || static_cast<size_t>(id) >= im.id_present.size() || !im.id_present[id])
      fail(KVC_ERR_OUT_OF_RANGE, "tokenizer: token id " + std::to_string(id) + " at index " +
                                     std::to_string(i) + " is not in the vocabulary (0.." +
                                     std::to_string(vocab_size() - 1) + ")");
    bytes += im.id_bytes[id];
  }
  if (utf8::is_valid(bytes)) return bytes;
  return utf8::replace_invalid(bytes);
}

int32_t Tokenizer::vocab_size() const { return static_cast<int32_t>(impl_->id_present.size()); }

int32_t Tokenizer::token_to_id(std::string_view token) const {
  if (auto it = impl_->added.find(token); it != impl_->added.end()) return it->second;
  if (auto it = impl_->vocab.find(token); it != impl_->vocab.end()) return it->second;
  return -1;
}

const std::string* Tokenizer::id_bytes(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= impl_->id_present.size() || !impl_->id_present[id])
    return nullptr;
  return &impl_->id_bytes[static_cast<size_t>(id)];
}

const std::string& Tokenizer::id_to_token(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= impl_->id_present.size() || !impl_->id_present[id])
    fail(KVC_ERR_OUT_OF_RANGE, "tokenizer: token id " + std::to_string(id) +
                                   " is not in the vocabulary");
  return impl_->id_token[id];
}

}  // namespace kvc

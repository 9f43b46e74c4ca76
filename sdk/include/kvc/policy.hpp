/*
 * kvc/policy.hpp — optional header-only C++17 helpers for writing kvc policy plugins.
 *
 * Everything here is a thin layer over the C ABI of kvc/policy.h: it needs no library, adds no
 * exported symbol and changes nothing about what crosses the boundary. It gives
 *  - kvc::sdk::Plugin<P> and KVC_SDK_POLICY(P): turn a C++ class into the descriptor and the
 *    kvc_policy_entry symbol; exceptions are caught at the boundary and reported through
 *    host->set_error with a nonzero return;
 *  - schema builders (int_param, float_param, ...) and Params, typed access by name;
 *  - CacheView / HeadView: the cache as spans, per (layer, head);
 *  - PlanWriter: checked writing of keep/evict lists; Selection: "protect these, keep the k
 *    best of the rest by a score" with the documented tie-break (older entry first).
 *
 * The policy class:
 *
 *   class MyPolicy {
 *    public:
 *     static constexpr const char *name = "mine";          // [a-z0-9_]+, = libkvc_policy_mine.so
 *     static constexpr const char *version = "1.0.0";
 *     static constexpr const char *description = "what it keeps";
 *     static constexpr kvc_param_info params[] = {          // optional
 *         kvc::sdk::int_param("budget", "256", 1, 1 << 20, "entries kept per (layer, head)")};
 *     MyPolicy(const kvc::sdk::Host &host, const kvc::sdk::Params &p, kvc_policy_setup &setup);
 *     // One of (or none, for a policy that only sets setup.use_rule):
 *     void decide(const kvc::sdk::CacheView &view, kvc::sdk::PlanWriter &plan);
 *     void decide(const kvc_cache_view &view, kvc_plan &plan);
 *     void reset();                                         // optional
 *     const void *get_extension(const char *id);            // optional
 *   };
 *   KVC_SDK_POLICY(MyPolicy)
 *
 * With the PlanWriter form, heads that were not written keep everything (see PlanWriter).
 * Threads and lifetime follow kvc/policy.h: one instance is used by one thread at a time.
 */
#pragma once

#include <kvc/policy.h>
#include <kvc/selection.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <iterator>
#include <limits>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#if __cplusplus < 201703L && !(defined(_MSVC_LANG) && _MSVC_LANG >= 201703L)
#error "kvc/policy.hpp needs C++17 or newer"
#endif

namespace kvc::sdk {

// ---- Errors -----------------------------------------------------------------------------------

// Thrown by the helpers and by policy code; its message reaches the engine via host->set_error.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

template <class... Parts>
[[noreturn]] void fail(const Parts &...parts) {
  std::ostringstream message;
  (message << ... << parts);
  throw Error(message.str());
}

template <class... Parts>
void require(bool condition, const Parts &...parts) {
  if (!condition) fail(parts...);
}

// ---- span (C++17 has no std::span) ------------------------------------------------------------

template <class T>
class span {
 public:
  using element_type = T;
  using value_type = std::remove_cv_t<T>;
  using iterator = T *;

  constexpr span() noexcept = default;
  constexpr span(T *data, std::size_t size) noexcept : data_(data), size_(size) {}
  template <class Container,
            class = std::enable_if_t<std::is_convertible_v<
                decltype(std::declval<Container &>().data()), T *>>>
  constexpr span(Container &c) noexcept : data_(c.data()), size_(c.size()) {}

  constexpr T *data() const noexcept { return data_; }
  constexpr std::size_t size() const noexcept { return size_; }
  constexpr bool empty() const noexcept { return size_ == 0; }
  constexpr T &operator[](std::size_t i) const noexcept { return data_[i]; }
  constexpr T *begin() const noexcept { return data_; }
  constexpr T *end() const noexcept { return data_ + size_; }

 private:
  T *data_ = nullptr;
  std::size_t size_ = 0;
};

// ---- Parameter schema -------------------------------------------------------------------------
// Defaults are text in the kvc_param syntax ("128", "0.5", "true", "per_head", "0,1,2").

constexpr kvc_param_info int_param(const char *name, const char *default_value, double min_value,
                                   double max_value, const char *help) {
  return {sizeof(kvc_param_info), name, KVC_PARAM_INT, default_value, min_value, max_value,
          nullptr, help};
}
constexpr kvc_param_info float_param(const char *name, const char *default_value,
                                     double min_value, double max_value, const char *help) {
  return {sizeof(kvc_param_info), name, KVC_PARAM_FLOAT, default_value, min_value, max_value,
          nullptr, help};
}
constexpr kvc_param_info bool_param(const char *name, const char *default_value,
                                    const char *help) {
  return {sizeof(kvc_param_info), name, KVC_PARAM_BOOL, default_value, 0, 1, nullptr, help};
}
// choices: '|'-separated, e.g. "per_head|shared".
constexpr kvc_param_info choice_param(const char *name, const char *default_value,
                                      const char *choices, const char *help) {
  return {sizeof(kvc_param_info), name, KVC_PARAM_CHOICE, default_value, 0, 0, choices, help};
}
// min/max bound every item.
constexpr kvc_param_info int_list_param(const char *name, const char *default_value,
                                        double min_value, double max_value, const char *help) {
  return {sizeof(kvc_param_info), name, KVC_PARAM_INT_LIST, default_value, min_value, max_value,
          nullptr, help};
}
constexpr kvc_param_info string_list_param(const char *name, const char *default_value,
                                           const char *help) {
  return {sizeof(kvc_param_info), name, KVC_PARAM_STRING_LIST, default_value, 0, 0, nullptr,
          help};
}

inline const char *param_type_name(kvc_param_type type) {
  switch (type) {
    case KVC_PARAM_INT: return "int";
    case KVC_PARAM_FLOAT: return "float";
    case KVC_PARAM_BOOL: return "bool";
    case KVC_PARAM_CHOICE: return "choice";
    case KVC_PARAM_INT_LIST: return "int list";
    case KVC_PARAM_STRING_LIST: return "string list";
  }
  return "unknown";
}

// The values create() receives, one per schema entry (defaults filled in, ranges checked by the
// engine), looked up by name with the type checked. Views only: valid during create().
class Params {
 public:
  Params(const kvc_param_info *schema, std::size_t n, const kvc_policy_value *values)
      : schema_(schema), n_(n), values_(values) {
    require(n == 0 || (schema != nullptr && values != nullptr),
            "kvc::sdk::Params: ", n, " parameters but no schema or values");
  }

  std::size_t size() const { return n_; }
  bool has(std::string_view name) const { return index_of(name) < n_; }

  std::int64_t get_int(std::string_view name) const {
    return value(name, KVC_PARAM_INT).i;
  }
  double get_float(std::string_view name) const { return value(name, KVC_PARAM_FLOAT).f; }
  bool get_bool(std::string_view name) const { return value(name, KVC_PARAM_BOOL).i != 0; }
  // The chosen text of a CHOICE, and its index in the '|'-separated choices.
  std::string_view get_choice(std::string_view name) const {
    const kvc_policy_value &v = value(name, KVC_PARAM_CHOICE);
    return v.n_strings > 0 && v.strings[0] ? std::string_view(v.strings[0]) : std::string_view();
  }
  std::int64_t get_choice_index(std::string_view name) const {
    return value(name, KVC_PARAM_CHOICE).i;
  }
  span<const std::int64_t> get_ints(std::string_view name) const {
    const kvc_policy_value &v = value(name, KVC_PARAM_INT_LIST);
    return {v.ints, v.n_ints};
  }
  std::vector<std::string_view> get_strings(std::string_view name) const {
    const kvc_policy_value &v = value(name, KVC_PARAM_STRING_LIST);
    std::vector<std::string_view> out;
    out.reserve(v.n_strings);
    for (std::size_t i = 0; i < v.n_strings; ++i) out.emplace_back(v.strings[i]);
    return out;
  }

  // get<T>: integers (range-checked into T), bool, floating point, std::string or
  // std::string_view (choice), std::vector<integer> (int list), std::vector<std::string>
  // (string list).
  template <class T>
  T get(std::string_view name) const {
    if constexpr (std::is_same_v<T, bool>) {
      return get_bool(name);
    } else if constexpr (std::is_integral_v<T>) {
      const std::int64_t v = get_int(name);
      require(v >= static_cast<std::int64_t>(std::numeric_limits<T>::min()) &&
                  static_cast<std::uint64_t>(v) <=
                      static_cast<std::uint64_t>(std::numeric_limits<T>::max()),
              "parameter '", name, "' = ", v, " does not fit the policy's integer type");
      return static_cast<T>(v);
    } else if constexpr (std::is_floating_point_v<T>) {
      return static_cast<T>(get_float(name));
    } else if constexpr (std::is_same_v<T, std::string_view>) {
      return get_choice(name);
    } else if constexpr (std::is_same_v<T, std::string>) {
      return std::string(get_choice(name));
    } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
      std::vector<std::string> out;
      for (std::string_view s : get_strings(name)) out.emplace_back(s);
      return out;
    } else {
      static_assert(std::is_integral_v<typename T::value_type>,
                    "get<T>: unsupported parameter type");
      T out;
      for (std::int64_t v : get_ints(name)) {
        require(v >= static_cast<std::int64_t>(
                         std::numeric_limits<typename T::value_type>::min()) &&
                    v <= static_cast<std::int64_t>(
                             std::numeric_limits<typename T::value_type>::max()),
                "parameter '", name, "': item ", v, " does not fit the policy's integer type");
        out.push_back(static_cast<typename T::value_type>(v));
      }
      return out;
    }
  }

 private:
  std::size_t index_of(std::string_view name) const {
    for (std::size_t i = 0; i < n_; ++i)
      if (schema_[i].name && name == schema_[i].name) return i;
    return n_;
  }
  const kvc_policy_value &value(std::string_view name, kvc_param_type type) const {
    const std::size_t i = index_of(name);
    if (i == n_) {
      std::string known;
      for (std::size_t k = 0; k < n_; ++k) known += (k ? ", " : "") + std::string(schema_[k].name);
      fail("no parameter '", name, "' in the policy's schema (it has: ",
           known.empty() ? "none" : known, ")");
    }
    require(schema_[i].type == type, "parameter '", name, "' is declared as ",
            param_type_name(schema_[i].type), ", not read as ", param_type_name(type));
    return values_[i];
  }

  const kvc_param_info *schema_;
  std::size_t n_;
  const kvc_policy_value *values_;
};

// ---- Host -------------------------------------------------------------------------------------

// A copy of the engine's services, kept by the instance for its lifetime.
class Host {
 public:
  Host() = default;
  explicit Host(const kvc_policy_host *host) {
    if (!host) return;
    std::memcpy(&host_, host, std::min(host->struct_size, sizeof host_));
    has_note_ = host->struct_size >= offsetof(kvc_policy_host, note) + sizeof host_.note;
    host_.struct_size = sizeof host_;
  }

  std::int32_t n_layers() const { return host_.n_layers; }
  std::int32_t n_heads() const { return host_.n_heads; }
  std::int32_t vocab_size() const { return host_.vocab_size; }
  std::int32_t max_position_embeddings() const { return host_.max_position_embeddings; }
  bool has_tokenizer() const {
    return host_.tokenize && host_.tokenize(host_.host_data, "", nullptr, 0) >= 0;
  }

  // Token ids of `text` under the model's tokenizer; throws if the model has none.
  std::vector<std::int32_t> tokenize(std::string_view text) const {
    const std::string s(text);
    std::int64_t n = host_.tokenize ? host_.tokenize(host_.host_data, s.c_str(), nullptr, 0) : -1;
    require(n >= 0, "cannot tokenize '", text, "': the model has no tokenizer");
    std::vector<std::int32_t> ids(static_cast<std::size_t>(n));
    if (n > 0) n = host_.tokenize(host_.host_data, s.c_str(), ids.data(), ids.size());
    require(n >= 0 && static_cast<std::size_t>(n) == ids.size(),
            "cannot tokenize '", text, "': the tokenizer returned ", n, " ids");
    return ids;
  }

  void set_error(const char *message) const {
    if (host_.set_error) host_.set_error(host_.host_data, message);
  }
  // A note on how the policy resolved its parameters, listed in the session's policy report
  // (kvc_session_policy_report); ignored by a host older than policy ABI 1.1.
  void note(const std::string &message) const {
    if (has_note_ && host_.note) host_.note(host_.host_data, message.c_str());
  }
  const kvc_policy_host &raw() const { return host_; }

 private:
  kvc_policy_host host_{};
  bool has_note_ = false;
};

// ---- Views ------------------------------------------------------------------------------------

// One (layer, head) cache, rank 0 = oldest entry.
class HeadView {
 public:
  HeadView(const kvc_head_view &v, std::int32_t layer, std::int32_t head)
      : v_(&v), layer_(layer), head_(head) {}

  std::int64_t size() const { return v_->n_entries; }
  std::int32_t layer() const { return layer_; }
  std::int32_t head() const { return head_; }
  span<const std::int64_t> positions() const { return {v_->positions, n()}; }
  span<const std::int32_t> token_ids() const { return {v_->token_ids, n()}; }
  // The signals throw if the policy did not ask for them in setup.signals.
  span<const float> acc_attention() const {
    return signal(v_->acc_attention, "acc_attention", "KVC_SIGNAL_ACC_ATTENTION");
  }
  span<const float> last_attention() const {
    return signal(v_->last_attention, "last_attention", "KVC_SIGNAL_LAST_ATTENTION");
  }
  span<const float> key_norms() const {
    return signal(v_->key_norms, "key_norms", "KVC_SIGNAL_KEY_NORM");
  }
  const kvc_head_view &raw() const { return *v_; }

 private:
  std::size_t n() const { return static_cast<std::size_t>(v_->n_entries); }
  span<const float> signal(const float *p, const char *what, const char *flag) const {
    require(p != nullptr || v_->n_entries == 0, "signal ", what, " of layer ", layer_, " head ",
            head_, " is not available: add ", flag, " to setup.signals in create");
    return {p, n()};
  }

  const kvc_head_view *v_;
  std::int32_t layer_, head_;
};

class CacheView {
 public:
  explicit CacheView(const kvc_cache_view &v) : v_(&v) {
    require(v.n_layers >= 0 && v.n_heads >= 0 && (v.heads || v.n_layers * v.n_heads == 0),
            "invalid cache view: ", v.n_layers, " layers x ", v.n_heads, " heads");
  }

  std::int32_t n_layers() const { return v_->n_layers; }
  std::int32_t n_heads() const { return v_->n_heads; }
  std::int64_t n_tokens_seen() const { return v_->n_tokens_seen; }
  std::int64_t n_new() const { return v_->n_new; }

  HeadView head(std::int32_t layer, std::int32_t head) const {
    require(layer >= 0 && layer < v_->n_layers && head >= 0 && head < v_->n_heads,
            "(layer ", layer, ", head ", head, ") is outside the cache view (", v_->n_layers,
            " layers x ", v_->n_heads, " heads)");
    return HeadView(v_->heads[static_cast<std::size_t>(layer * v_->n_heads + head)], layer,
                    head);
  }
  // Calls f(HeadView) for every (layer, head), layer-major.
  template <class F>
  void for_each_head(F &&f) const {
    for (std::int32_t l = 0; l < v_->n_layers; ++l)
      for (std::int32_t h = 0; h < v_->n_heads; ++h) f(head(l, h));
  }
  const kvc_cache_view &raw() const { return *v_; }

 private:
  const kvc_cache_view *v_;
};

// ---- Plans ------------------------------------------------------------------------------------

// Writes a kvc_plan with the checks the engine will apply (strictly increasing ranks inside the
// head, room in the list), so that a mistake is reported where it is made. The kind (keep or
// evict) and sharing are decided by the first write and must stay the same for the whole plan.
// finish() completes a KEEP plan: heads that were not written keep all their entries (in a
// KEEP plan an empty list would mean "evict everything"). Plugin<P> calls it for you.
class PlanWriter {
 public:
  PlanWriter(kvc_plan &plan, const kvc_cache_view &view)
      : plan_(&plan), view_(view), written_(n_lists(view), 0) {
    plan_->kind = KVC_PLAN_NOTHING;
    plan_->shared = 0;
  }

  void keep(std::int32_t layer, std::int32_t head, span<const std::int32_t> ranks) {
    write(KVC_PLAN_KEEP, false, layer, head, ranks);
  }
  void evict(std::int32_t layer, std::int32_t head, span<const std::int32_t> ranks) {
    write(KVC_PLAN_EVICT, false, layer, head, ranks);
  }
  // One list for every (layer, head); all heads must hold the same entries (same positions).
  void keep_shared(span<const std::int32_t> ranks) { write(KVC_PLAN_KEEP, true, 0, 0, ranks); }
  void evict_shared(span<const std::int32_t> ranks) { write(KVC_PLAN_EVICT, true, 0, 0, ranks); }

  kvc_plan_kind kind() const { return plan_->kind; }

  void finish() {
    if (plan_->kind != KVC_PLAN_KEEP || plan_->shared) return;
    for (std::size_t i = 0; i < written_.size(); ++i) {
      if (written_[i]) continue;
      const std::int64_t n = view_.raw().heads[i].n_entries;
      std::int32_t *list = plan_->ranks + static_cast<std::int64_t>(i) * plan_->stride;
      for (std::int64_t r = 0; r < n; ++r) list[r] = static_cast<std::int32_t>(r);
      plan_->counts[i] = n;
      written_[i] = 1;
    }
  }

 private:
  static std::size_t n_lists(const kvc_cache_view &v) {
    return static_cast<std::size_t>(std::max(0, v.n_layers)) *
           static_cast<std::size_t>(std::max(0, v.n_heads));
  }

  void write(kvc_plan_kind kind, bool shared, std::int32_t layer, std::int32_t head,
             span<const std::int32_t> ranks) {
    const char *what = kind == KVC_PLAN_KEEP ? "keep" : "evict";
    if (plan_->kind == KVC_PLAN_NOTHING) {
      plan_->kind = kind;
      plan_->shared = shared ? 1 : 0;
    }
    require(plan_->kind == kind && (plan_->shared != 0) == shared,
            "plan: cannot mix ", shared ? "shared " : "per-head ", what,
            " lists with the plan's earlier ",
            plan_->shared ? "shared " : "per-head ",
            plan_->kind == KVC_PLAN_KEEP ? "keep" : "evict", " lists");
    const HeadView h = view_.head(layer, head);
    const auto index = static_cast<std::size_t>(layer * view_.n_heads() + head);
    require(!written_[index], "plan: (layer ", layer, ", head ", head, ") written twice");
    require(static_cast<std::int64_t>(ranks.size()) <= plan_->stride, "plan: ", ranks.size(),
            " ranks for (layer ", layer, ", head ", head, ") exceed the list room of ",
            plan_->stride);
    if (shared) {
      for (std::int32_t l = 0; l < view_.n_layers(); ++l)
        for (std::int32_t hd = 0; hd < view_.n_heads(); ++hd) {
          const HeadView other = view_.head(l, hd);
          const bool same =
              other.size() == h.size() &&
              std::equal(other.positions().begin(), other.positions().end(),
                         h.positions().begin());
          require(same, "plan: a shared list needs every (layer, head) to hold the same ",
                  "entries, but (layer ", l, ", head ", hd, ") differs from (layer 0, head 0)");
        }
    }
    std::int32_t *list = plan_->ranks + static_cast<std::int64_t>(index) * plan_->stride;
    std::int64_t previous = -1;
    for (std::size_t i = 0; i < ranks.size(); ++i) {
      const std::int64_t r = ranks[i];
      require(r > previous && r < h.size(), "plan: ", what, " rank ", r, " at index ", i,
              " for (layer ", layer, ", head ", head, ") must be > ", previous, " and < ",
              h.size(), " (ranks strictly increasing, inside the head's ", h.size(),
              " entries)");
      list[i] = static_cast<std::int32_t>(r);
      previous = r;
    }
    plan_->counts[index] = static_cast<std::int64_t>(ranks.size());
    written_[index] = 1;
  }

  kvc_plan *plan_;
  CacheView view_;
  std::vector<unsigned char> written_;
};

// Builds one head's keep list: protect spans, then keep the best of the rest by a score.
// Reuse one Selection across heads and steps to avoid allocating in decide().
class Selection {
 public:
  void reset(std::int64_t n_entries) {
    require(n_entries >= 0, "Selection: negative entry count ", n_entries);
    kept_.assign(static_cast<std::size_t>(n_entries), 0);
    n_kept_ = 0;
  }
  std::int64_t size() const { return static_cast<std::int64_t>(kept_.size()); }
  std::int64_t n_kept() const { return n_kept_; }
  bool kept(std::int64_t rank) const { return kept_[static_cast<std::size_t>(rank)] != 0; }

  void keep(std::int64_t rank) {
    require(rank >= 0 && rank < size(), "Selection: rank ", rank, " outside [0, ", size(), ")");
    n_kept_ += kept_[static_cast<std::size_t>(rank)] ? 0 : 1;
    kept_[static_cast<std::size_t>(rank)] = 1;
  }
  // The k oldest entries (attention sinks).
  void keep_first(std::int64_t k) {
    for (std::int64_t r = 0; r < std::min(k, size()); ++r) keep(r);
  }
  // The k most recent entries.
  void keep_last(std::int64_t k) {
    for (std::int64_t r = std::max<std::int64_t>(0, size() - k); r < size(); ++r) keep(r);
  }
  // Among the entries not kept yet, the k with the smallest / largest score. Ties: the older
  // entry (lower rank) first. NaN scores come last in both orders.
  void keep_smallest(span<const float> score, std::int64_t k) { keep_best(score, k, false); }
  void keep_largest(span<const float> score, std::int64_t k) { keep_best(score, k, true); }

  // The kept ranks, increasing.
  const std::vector<std::int32_t> &ranks() {
    ranks_.clear();
    for (std::size_t r = 0; r < kept_.size(); ++r)
      if (kept_[r]) ranks_.push_back(static_cast<std::int32_t>(r));
    return ranks_;
  }

 private:
  void keep_best(span<const float> score, std::int64_t k, bool largest) {
    require(static_cast<std::int64_t>(score.size()) == size(), "Selection: ", score.size(),
            " scores for ", size(), " entries");
    candidates_.clear();
    for (std::size_t r = 0; r < kept_.size(); ++r)
      if (!kept_[r]) candidates_.push_back(static_cast<std::int32_t>(r));
    if (k <= 0) return;
    const auto end = selection::keep_best(
        candidates_.begin(), candidates_.end(), static_cast<std::size_t>(k),
        [&](std::int32_t r) { return score[static_cast<std::size_t>(r)]; },
        largest ? selection::Order::Largest : selection::Order::Smallest);
    for (auto it = candidates_.begin(); it != end; ++it) keep(*it);
  }

  std::vector<unsigned char> kept_;
  std::vector<std::int32_t> candidates_, ranks_;
  std::int64_t n_kept_ = 0;
};

// ---- Rules ------------------------------------------------------------------------------------

// Fills setup.rule for a policy that lets the engine select (kvc/policy.h, kvc_rule), and owns
// the arrays the rule points to. Keep it as a member of the policy class, so that the arrays
// live until destroy, and call finish() at the end of the constructor:
//
//   H2O(const Host &, const Params &p, kvc_policy_setup &setup) {
//     rule_.sinks(p.get_int("start_size")).recent(p.get_int("recent_size"))
//          .heavy(p.get_int("heavy_size"), KVC_SIGNAL_ACC_ATTENTION).finish(setup);
//   }
//
// finish() sets use_rule, the signals the rule reads, the trigger (OVER_CAPACITY at the keep
// count, or at burst_at()) and the capacity, and checks that the rule keeps something.
class Rule {
 public:
  Rule() { rule_.struct_size = sizeof rule_; }
  Rule(const Rule &) = delete;  // the rule points into its own vectors
  Rule &operator=(const Rule &) = delete;

  Rule &sinks(std::int64_t n) { return set(rule_.sink_size, n, "sinks"); }
  Rule &recent(std::int64_t n) { return set(rule_.recent_size, n, "recent"); }
  // The most recent `n` entries of the middle whose token is one of `ids`.
  Rule &separators(std::int64_t n, std::vector<std::int32_t> ids) {
    separator_ids_ = std::move(ids);
    return set(rule_.separator_size, n, "separators");
  }
  // The best `n` of the remaining middle by `signal` (KVC_SIGNAL_*), at the `order` end.
  Rule &heavy(std::int64_t n, std::uint32_t signal, kvc_order order = KVC_ORDER_LARGEST) {
    rule_.heavy_signal = signal;
    rule_.heavy_order = order;
    return set(rule_.heavy_size, n, "heavy");
  }
  // One heavy budget per layer instead of heavy's (PyramidKV).
  Rule &layer_heavy(std::vector<std::int64_t> sizes) {
    layer_heavy_ = std::move(sizes);
    return *this;
  }
  // Equal heavy scores ranked by a second signal (largest first) before age.
  Rule &tie(std::uint32_t signal) {
    rule_.tie_signal = signal;
    return *this;
  }
  // Queries covered by KVC_SIGNAL_WINDOW_ATTENTION and KVC_SIGNAL_PIVOTAL_COUNT.
  Rule &window(std::int64_t queries) { return set(rule_.signal_window, queries, "window"); }
  Rule &pool(kvc_pooling pooling, std::int64_t kernel) {
    rule_.pooling = pooling;
    return set(rule_.pool_kernel, kernel, "pool kernel");
  }
  // KVC_SCOPE_SHARED sums the signal over `score_layers` (at least one) and their heads.
  Rule &scope(kvc_scope scope, std::vector<std::int32_t> score_layers = {}) {
    require(scope != KVC_SCOPE_SHARED || !score_layers.empty(),
            "score_layers must list at least one layer");
    for (std::size_t i = 0; i < score_layers.size(); ++i)
      require(std::find(score_layers.begin(), score_layers.begin() + static_cast<std::ptrdiff_t>(i),
                        score_layers[i]) == score_layers.begin() + static_cast<std::ptrdiff_t>(i),
              "score_layers: layer ", score_layers[i], " is listed twice");
    rule_.scope = scope;
    score_layers_ = scope == KVC_SCOPE_SHARED ? std::move(score_layers)
                                              : std::vector<std::int32_t>{};
    return *this;
  }
  // The lazy refresh of lazy H2O: a full selection every `update_interval` steps (0: always).
  Rule &lazy(std::int64_t update_interval) {
    return set(rule_.update_interval, update_interval, "update_interval");
  }
  // Ada-KV: a layer's heads share its heavy budget; each keeps at least `floor` of its own.
  Rule &adaptive(double floor) {
    require(floor >= 0.0 && floor <= 1.0, "the adaptive floor ", floor, " is outside [0, 1]");
    rule_.allocation = KVC_ALLOCATION_ADAPTIVE;
    rule_.allocation_floor = floor;
    return *this;
  }
  // Lets a group grow to `trigger_size` entries before it is cut back (SepLLM's bursts);
  // by default the rule selects as soon as a group exceeds its keep count.
  Rule &burst_at(std::int64_t trigger_size) { return set(burst_, trigger_size, "burst_at"); }

  // The keep count of the layer with the largest heavy budget.
  std::int64_t keep_count() const {
    std::int64_t heavy = rule_.heavy_size;
    for (std::int64_t h : layer_heavy_) heavy = std::max(heavy, h);
    return rule_.sink_size + rule_.recent_size + rule_.separator_size + heavy;
  }

  void finish(kvc_policy_setup &setup) {
    require(keep_count() >= 1, "the rule keeps nothing: its sizes add up to 0 (at least 1 "
                               "entry must be kept)");
    rule_.separator_ids = separator_ids_.empty() ? nullptr : separator_ids_.data();
    rule_.n_separator_ids = separator_ids_.size();
    rule_.score_layers = score_layers_.empty() ? nullptr : score_layers_.data();
    rule_.n_score_layers = score_layers_.size();
    rule_.layer_heavy_sizes = layer_heavy_.empty() ? nullptr : layer_heavy_.data();
    rule_.n_layer_heavy_sizes = layer_heavy_.size();
    // Copy only as much of the rule as the host's setup holds (an older host has less).
    const std::size_t room = setup.struct_size > offsetof(kvc_policy_setup, rule)
                                 ? setup.struct_size - offsetof(kvc_policy_setup, rule)
                                 : 0;
    std::memcpy(&setup.rule, &rule_, std::min(room, sizeof rule_));
    setup.use_rule = 1;
    const bool heavy = rule_.heavy_size > 0 || !layer_heavy_.empty();
    setup.signals |= (heavy ? rule_.heavy_signal : 0u) | rule_.tie_signal;
    setup.trigger = KVC_TRIGGER_OVER_CAPACITY;
    setup.trigger_size = burst_ > 0 ? std::max(burst_, keep_count()) : keep_count();
    // With adaptive allocation one head may hold more than the keep count: the engine bounds
    // it (kvc/policy.h), so no per-head capacity is declared.
    setup.capacity = rule_.allocation == KVC_ALLOCATION_ADAPTIVE ? -1 : setup.trigger_size;
  }

 private:
  Rule &set(std::int64_t &field, std::int64_t n, const char *what) {
    require(n >= 0, "rule ", what, ": ", n, " is negative");
    field = n;
    return *this;
  }

  kvc_rule rule_{};
  std::vector<std::int32_t> separator_ids_, score_layers_;
  std::vector<std::int64_t> layer_heavy_;
  std::int64_t burst_ = 0;
};

// Token ids of strings under the model's tokenizer, each kept when it encodes to exactly one
// token; with `leading_space`, " " + string is tried too (SepLLM's expansion of user strings).
// Sorted, without duplicates; the strings (or variants) that are not one token go to
// *dropped when it is given. Throws when the model has no tokenizer.
inline std::vector<std::int32_t> single_token_ids(const Host &host,
                                                  const std::vector<std::string_view> &strings,
                                                  bool leading_space,
                                                  std::vector<std::string> *dropped = nullptr) {
  std::vector<std::int32_t> out;
  for (std::string_view s : strings) {
    std::vector<std::string> variants = {std::string(s)};
    if (leading_space) {
      std::string spaced(1, ' ');  // built piecewise: GCC 12 warns (-Wrestrict) on " " + string
      spaced += s;
      variants.push_back(std::move(spaced));
    }
    for (const std::string &v : variants) {
      const std::vector<std::int32_t> ids = host.tokenize(v);
      if (ids.size() == 1)
        out.push_back(ids[0]);
      else if (dropped)
        dropped->push_back(v);
    }
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

// ---- The descriptor ---------------------------------------------------------------------------

namespace detail {
template <class P, class = void>
struct has_params : std::false_type {};
template <class P>
struct has_params<P, std::void_t<decltype(std::size(P::params))>> : std::true_type {};

template <class P, class = void>
struct has_wrapped_decide : std::false_type {};
template <class P>
struct has_wrapped_decide<P, std::void_t<decltype(std::declval<P &>().decide(
                                 std::declval<const CacheView &>(), std::declval<PlanWriter &>()))>>
    : std::true_type {};

template <class P, class = void>
struct has_raw_decide : std::false_type {};
template <class P>
struct has_raw_decide<P, std::void_t<decltype(std::declval<P &>().decide(
                             std::declval<const kvc_cache_view &>(), std::declval<kvc_plan &>()))>>
    : std::true_type {};

template <class P, class = void>
struct has_reset : std::false_type {};
template <class P>
struct has_reset<P, std::void_t<decltype(std::declval<P &>().reset())>> : std::true_type {};

template <class P, class = void>
struct has_extension : std::false_type {};
template <class P>
struct has_extension<P, std::void_t<decltype(std::declval<P &>().get_extension(
                            std::declval<const char *>()))>> : std::true_type {};

// Runs f; turns an exception into host->set_error and a nonzero return.
template <class F>
int guarded(const Host &host, F &&f) noexcept {
  try {
    f();
    return 0;
  } catch (const std::exception &e) {
    host.set_error(e.what());
  } catch (...) {
    host.set_error("unknown C++ exception in the policy");
  }
  return 1;
}
}  // namespace detail

template <class P>
class Plugin {
  struct Instance {
    Instance(const kvc_policy_host *h, const Params &params, kvc_policy_setup &setup)
        : host(h), policy(host, params, setup) {}
    Host host;  // first: the policy may keep a reference to it
    P policy;
  };

 public:
  static const kvc_param_info *schema() {
    if constexpr (detail::has_params<P>::value) return P::params;
    return nullptr;
  }
  static std::size_t schema_size() {
    if constexpr (detail::has_params<P>::value) return std::size(P::params);
    return 0;
  }

  // The host's version is not checked here: the engine compares abi_major itself and reports a
  // mismatch with both numbers, which is clearer than a NULL descriptor.
  static const kvc_policy_descriptor *descriptor(std::uint32_t /*host_abi_major*/,
                                                 std::uint32_t /*host_abi_minor*/) {
    static const kvc_policy_descriptor d = make();
    return &d;
  }

 private:
  static kvc_policy_descriptor make() {
    kvc_policy_descriptor d{};
    d.struct_size = sizeof d;
    d.abi_major = KVC_POLICY_ABI_MAJOR;
    d.abi_minor = KVC_POLICY_ABI_MINOR;
    d.name = P::name;
    d.version = P::version;
    d.description = P::description;
    d.params = schema();
    d.n_params = schema_size();
    d.create = &create;
    d.destroy = &destroy;
    d.reset = detail::has_reset<P>::value ? &reset : nullptr;
    d.decide = detail::has_wrapped_decide<P>::value || detail::has_raw_decide<P>::value
                   ? &decide
                   : nullptr;
    d.get_extension = detail::has_extension<P>::value ? &get_extension : nullptr;
    return d;
  }

  static int create(const kvc_policy_host *host, const kvc_policy_value *values,
                    kvc_policy_setup *setup, void **instance) noexcept {
    if (!instance) return 1;
    *instance = nullptr;
    const Host h(host);
    if (!setup) {
      h.set_error("create: setup is NULL");
      return 1;
    }
    return detail::guarded(h, [&] {
      const Params params(schema(), schema_size(), values);
      *instance = new Instance(host, params, *setup);
    });
  }

  static void destroy(void *instance) noexcept { delete static_cast<Instance *>(instance); }

  static int reset(void *instance) noexcept {
    auto *self = static_cast<Instance *>(instance);
    if constexpr (detail::has_reset<P>::value)
      return detail::guarded(self->host, [&] { self->policy.reset(); });
    return 0;
  }

  static int decide(void *instance, const kvc_cache_view *view, kvc_plan *plan) noexcept {
    auto *self = static_cast<Instance *>(instance);
    if (!view || !plan) {
      self->host.set_error("decide: view or plan is NULL");
      return 1;
    }
    return detail::guarded(self->host, [&] {
      if constexpr (detail::has_wrapped_decide<P>::value) {
        PlanWriter writer(*plan, *view);
        self->policy.decide(CacheView(*view), writer);
        writer.finish();
      } else if constexpr (detail::has_raw_decide<P>::value) {
        self->policy.decide(*view, *plan);
      }
    });
  }

  static const void *get_extension(void *instance, const char *id) noexcept {
    if constexpr (detail::has_extension<P>::value) {
      try {
        return static_cast<Instance *>(instance)->policy.get_extension(id);
      } catch (...) {
        return nullptr;
      }
    }
    return nullptr;
  }
};

}  // namespace kvc::sdk

// Defines the plugin's one exported symbol for policy class P.
#define KVC_SDK_POLICY(P)                                                                    \
  extern "C" KVC_POLICY_EXPORT const kvc_policy_descriptor *kvc_policy_entry(                \
      std::uint32_t host_abi_major, std::uint32_t host_abi_minor) {                         \
    return ::kvc::sdk::Plugin<P>::descriptor(host_abi_major, host_abi_minor);                \
  }

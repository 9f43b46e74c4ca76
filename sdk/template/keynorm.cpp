// keynorm: a kvc eviction policy that keeps the attention sinks, the most recent entries and,
// among the rest, the entries whose keys have the smallest L2 norm, separately for every
// (layer, head). Low-norm keys tend to receive the most attention, so the key norm stands in
// for attention scores without computing them ("Knorm", policies.md §5).
//
// It is a callback policy: the engine's declarative rule keeps the *largest* values of a signal,
// so "smallest norm" is decided here, through the C++ helpers of kvc/policy.hpp.
#include <kvc/policy.hpp>

#include <cstdint>

namespace {

class KeyNorm {
 public:
  static constexpr const char *name = "keynorm";
  static constexpr const char *version = "1.0.0";
  static constexpr const char *description =
      "Keeps the sinks, the recent window and the keys with the smallest L2 norm, per head";
  static constexpr kvc_param_info params[] = {
      kvc::sdk::int_param("start_size", "4", 0, 1 << 20,
                          "Oldest entries always kept (attention sinks)"),
      kvc::sdk::int_param("recent_size", "124", 0, 1 << 20, "Most recent entries always kept"),
      kvc::sdk::int_param("budget", "256", 1, 1 << 20,
                          "Entries kept per (layer, head); at least start_size + recent_size"),
  };

  KeyNorm(const kvc::sdk::Host &, const kvc::sdk::Params &p, kvc_policy_setup &setup)
      : start_(p.get<std::int64_t>("start_size")),
        recent_(p.get<std::int64_t>("recent_size")),
        budget_(p.get<std::int64_t>("budget")) {
    // Thrown errors reach the user as the session's error message.
    kvc::sdk::require(budget_ >= start_ + recent_, "keynorm: budget (", budget_,
                      ") must be at least start_size + recent_size (", start_ + recent_, ")");
    setup.signals = KVC_SIGNAL_KEY_NORM;
    setup.trigger = KVC_TRIGGER_OVER_CAPACITY;  // consulted only when a head exceeds budget
    setup.trigger_size = budget_;
    setup.capacity = budget_;
  }

  void decide(const kvc::sdk::CacheView &view, kvc::sdk::PlanWriter &plan) {
    view.for_each_head([&](const kvc::sdk::HeadView &head) {
      if (head.size() <= budget_) return;  // unwritten heads keep everything
      selection_.reset(head.size());
      selection_.keep_first(start_);
      selection_.keep_last(recent_);
      selection_.keep_smallest(head.key_norms(), budget_ - selection_.n_kept());
      plan.keep(head.layer(), head.head(), selection_.ranks());
    });
  }

 private:
  std::int64_t start_, recent_, budget_;
  kvc::sdk::Selection selection_;  // reused: no allocation per step once warmed up
};

}  // namespace

KVC_SDK_POLICY(KeyNorm)

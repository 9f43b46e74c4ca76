#include "outputs.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>

#include <nlohmann/json.hpp>

#include "options.h"
#include "runtime.h"

namespace kvc::hosts {

namespace {

std::string number(double v) {
  if (!std::isfinite(v)) return "nan";
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%.9g", v);
  return buffer;
}

// File names go into a tab-separated column: tabs and line breaks would break the rows.
std::string tsv_field(const std::string& text) {
  std::string out = text;
  for (char& c : out)
    if (c == '\t' || c == '\n' || c == '\r') c = ' ';
  return out;
}

constexpr size_t kFlushBytes = 1 << 20;

}  // namespace

NllDump::NllDump(const std::filesystem::path& path, bool with_comparison)
    : file_(path), comparison_(with_comparison) {
  file_.write(std::string("file\tposition\ttoken\tnll\tcache\tevicted") +
              (comparison_ ? "\tkl\ttop1" : "") + "\n");
}

void NllDump::add(const TokenRecord& r, const std::string& file_name) {
  buffer_ += tsv_field(file_name) + "\t" + std::to_string(r.position) + "\t" +
             std::to_string(r.token) + "\t" + number(r.nll) + "\t" + std::to_string(r.cache) +
             "\t" + std::to_string(r.evicted);
  if (comparison_) buffer_ += "\t" + number(r.kl) + "\t" + std::to_string(r.top1);
  buffer_ += "\n";
  if (buffer_.size() >= kFlushBytes) {
    file_.write(buffer_);
    buffer_.clear();
  }
}

void NllDump::commit() {
  file_.write(buffer_);
  buffer_.clear();
  file_.commit();
}

std::vector<std::pair<int32_t, int32_t>> parse_trace_heads(const std::string& text,
                                                           int32_t n_layers, int32_t n_heads) {
  std::vector<std::pair<int32_t, int32_t>> heads;
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find(',', start);
    if (end == std::string::npos) end = text.size();
    const std::string item = text.substr(start, end - start);
    const size_t colon = item.find(':');
    int32_t layer = 0, head = 0;
    auto parse = [](const std::string& s, int32_t* v) {
      auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), *v);
      return ec == std::errc() && p == s.data() + s.size() && !s.empty();
    };
    if (colon == std::string::npos || !parse(item.substr(0, colon), &layer) ||
        !parse(item.substr(colon + 1), &head))
      throw UsageError("--trace_heads: '" + item + "' is not LAYER:HEAD (e.g. 0:0,-1:0)");
    if (layer < 0) layer += n_layers;
    if (layer < 0 || layer >= n_layers || head < 0 || head >= n_heads)
      throw UsageError("--trace_heads: '" + item + "' is outside the model (" +
                       std::to_string(n_layers) + " layers of " + std::to_string(n_heads) +
                       " heads)");
    heads.emplace_back(layer, head);
    start = end + 1;
  }
  return heads;
}

CacheTrace::CacheTrace(const std::filesystem::path& path, const kvc_model_info& info,
                       std::vector<std::pair<int32_t, int32_t>> plot_heads)
    : file_(path),
      n_layers_(info.n_layers),
      n_heads_(info.n_heads),
      plot_heads_(std::move(plot_heads)),
      plot_points_(plot_heads_.size()) {
  for (auto& s : plot_points_) {
    s.name = "kept entry";
    s.style = Series::Style::Points;
  }
}

void CacheTrace::capture(const kvc_session* session, const std::string& file_name,
                         int64_t step) {
  if (file_name != last_file_ || step < last_step_) offset_ += last_step_;
  last_file_ = file_name;
  last_step_ = step;
  using json = nlohmann::ordered_json;
  std::vector<int64_t> positions;
  std::vector<float> scores;
  json layers = json::array();
  for (int32_t l = 0; l < n_layers_; ++l) {
    json heads = json::array();
    for (int32_t h = 0; h < n_heads_; ++h) {
      size_t n = 0;
      kvc_session_cache_entries(session, l, h, nullptr, nullptr, 0, &n);  // the count
      positions.resize(n);
      check(kvc_session_cache_entries(session, l, h, positions.data(), nullptr, n, &n),
            "reading the cache of layer " + std::to_string(l) + " head " + std::to_string(h));
      scores.resize(n);
      size_t n_scores = 0;
      const kvc_status status =
          kvc_session_cache_scores(session, l, h, scores.data(), scores.size(), &n_scores);
      if (status != KVC_OK && status != KVC_ERR_NOT_FOUND)
        check(status, "reading the scores of layer " + std::to_string(l));
      json head = {{"positions", positions}};
      head["scores"] = status == KVC_OK ? json(scores) : json(nullptr);
      heads.push_back(std::move(head));
      for (size_t c = 0; c < plot_heads_.size(); ++c) {
        if (plot_heads_[c] != std::make_pair(l, h)) continue;
        for (int64_t p : positions) {
          plot_points_[c].x.push_back(static_cast<double>(offset_ + step));
          plot_points_[c].y.push_back(static_cast<double>(p));
        }
      }
    }
    layers.push_back(std::move(heads));
  }
  json line = {{"file", file_name}, {"step", step}, {"heads", std::move(layers)}};
  file_.write(line.dump() + "\n");
}

std::vector<Panel> CacheTrace::panels() const {
  std::vector<Panel> out;
  for (size_t c = 0; c < plot_heads_.size(); ++c) {
    Panel p;
    p.title = "layer " + std::to_string(plot_heads_[c].first) + ", head " +
              std::to_string(plot_heads_[c].second);
    p.xlabel = "step (tokens fed)";
    p.ylabel = "position of a kept entry";
    p.y_from_zero = true;
    p.series.push_back(plot_points_[c]);
    out.push_back(std::move(p));
  }
  return out;
}

void LossByPosition::add(const TokenRecord& r) {
  const auto p = static_cast<size_t>(r.position);
  if (p >= sum_.size()) {
    sum_.resize(p + 1, 0.0);
    count_.resize(p + 1, 0);
  }
  sum_[p] += r.nll;
  ++count_[p];
}

nlohmann::ordered_json LossByPosition::json() const {
  return {{"sum", sum_}, {"count", count_}};
}

void LossByPosition::merge(const nlohmann::ordered_json& j) {
  const auto sum = j.at("sum").get<std::vector<double>>();
  const auto count = j.at("count").get<std::vector<int64_t>>();
  if (sum.size() != count.size()) throw RunError("loss_by_position: sum and count differ in length");
  if (sum.size() > sum_.size()) {
    sum_.resize(sum.size(), 0.0);
    count_.resize(sum.size(), 0);
  }
  for (size_t p = 0; p < sum.size(); ++p) {
    sum_[p] += sum[p];
    count_[p] += count[p];
  }
}

Series LossByPosition::series(const std::string& name, int64_t window,
                              int64_t* used_window) const {
  const int64_t n = static_cast<int64_t>(count_.size());
  if (window <= 0) window = std::max<int64_t>(1, n / 40);
  *used_window = window;
  Series s;
  s.name = name;
  s.style = Series::Style::Lines;
  // Running mean of the per-position means over the last `window` positions that have data.
  double running = 0;
  std::vector<double> recent;
  for (int64_t p = 0; p < n; ++p) {
    if (count_[static_cast<size_t>(p)] == 0) continue;
    const double mean = sum_[static_cast<size_t>(p)] / static_cast<double>(count_[p]);
    recent.push_back(mean);
    running += mean;
    if (static_cast<int64_t>(recent.size()) > window)
      running -= recent[recent.size() - static_cast<size_t>(window) - 1];
    const int64_t have = std::min<int64_t>(window, static_cast<int64_t>(recent.size()));
    if (have < window && static_cast<int64_t>(recent.size()) < window) continue;
    s.x.push_back(static_cast<double>(p));
    s.y.push_back(running / static_cast<double>(have));
  }
  return s;
}

}  // namespace kvc::hosts

#include "report.h"

#include <cstdio>
#include <exception>

#include "files.h"

namespace kvc::hosts {

void warn(const std::string& program, const std::string& message) {
  std::fprintf(stderr, "%s: warning: %s\n", program.c_str(), message.c_str());
}

int guarded_main(const std::string& program, const std::function<int()>& body) {
  try {
    return body();
  } catch (const UsageError& e) {
    std::fprintf(stderr, "%s: error: %s\n", program.c_str(), e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: error: %s\n", program.c_str(), e.what());
    return 1;
  }
}

void write_json(const std::filesystem::path& path, const nlohmann::ordered_json& value) {
  write_file_atomic(path, value.dump(2) + "\n");
}

std::string markdown_table(const std::vector<std::string>& header,
                           const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width(header.size());
  for (size_t c = 0; c < header.size(); ++c) width[c] = header[c].size();
  for (const auto& row : rows) {
    for (size_t c = 0; c < row.size() && c < width.size(); ++c) {
      width[c] = std::max(width[c], row[c].size());
    }
  }
  auto line = [&](const std::vector<std::string>& cells) {
    std::string out = "|";
    for (size_t c = 0; c < width.size(); ++c) {
      std::string cell = c < cells.size() ? cells[c] : "";
      out += " " + cell + std::string(width[c] - cell.size(), ' ') + " |";
    }
    return out + "\n";
  };
  std::string out = line(header) + "|";
  for (size_t c = 0; c < width.size(); ++c) out += std::string(width[c] + 2, '-') + "|";
  out += "\n";
  for (const auto& row : rows) out += line(row);
  return out;
}

std::string format_fixed(double value, int decimals) {
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%.*f", decimals, value);
  return buffer;
}

nlohmann::ordered_json settings_json(const Options& options) {
  nlohmann::ordered_json out = nlohmann::ordered_json::object();
  for (const auto& o : options.options()) {
    if (o.kind == Kind::ParamList) continue;
    nlohmann::ordered_json value;
    std::visit(
        [&](const auto& v) {
          using T = std::decay_t<decltype(v)>;
          if constexpr (std::is_same_v<T, std::monostate>) {
            value = nullptr;
          } else if constexpr (std::is_same_v<T, std::vector<std::pair<std::string,
                                                                       std::string>>>) {
            value = nullptr;
          } else {
            value = v;
          }
        },
        o.value);
    out[o.section][o.key] = value;
  }
  for (const PolicyParam& p : options.extra_policy_params())
    std::visit([&](const auto& v) { out["policy"][p.name] = v; }, p.value);
  return out;
}

}  // namespace kvc::hosts

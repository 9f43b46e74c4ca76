// Small shared pieces of the programs' main functions: messages, JSON output, tables.
#pragma once

#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "options.h"

namespace kvc::hosts {

void warn(const std::string& program, const std::string& message);

// Runs `body` and maps exceptions to exit codes: UsageError 2, everything else 1, printing
// "<program>: error: <message>" on stderr.
int guarded_main(const std::string& program, const std::function<int()>& body);

// JSON text with 2-space indentation and a final newline, written atomically.
void write_json(const std::filesystem::path& path, const nlohmann::ordered_json& value);

// A markdown table: header row, separator, rows (cells already formatted).
std::string markdown_table(const std::vector<std::string>& header,
                           const std::vector<std::vector<std::string>>& rows);

std::string format_fixed(double value, int decimals);

// The effective settings as JSON ({"model": {...}, "policy": {...}, ...}) for the results.
nlohmann::ordered_json settings_json(const Options& options);

}  // namespace kvc::hosts

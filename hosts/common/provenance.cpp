#include "provenance.h"

#include <openssl/evp.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <memory>

#include "kvc/kvc.h"
#include "kvc/policy.h"
#include "options.h"

namespace fs = std::filesystem;

namespace kvc::hosts {
namespace {

struct DigestFree {
  void operator()(EVP_MD_CTX* ctx) const { EVP_MD_CTX_free(ctx); }
};

// Feeds `read(buffer, capacity)` (returns bytes, 0 at the end) through SHA-256.
template <typename Reader>
std::string sha256_of(Reader&& read, const std::string& what) {
  std::unique_ptr<EVP_MD_CTX, DigestFree> ctx(EVP_MD_CTX_new());
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1)
    throw RunError("cannot start a SHA-256 digest of " + what);
  std::vector<char> buffer(1 << 20);
  for (;;) {
    const size_t n = read(buffer.data(), buffer.size());
    if (n == 0) break;
    EVP_DigestUpdate(ctx.get(), buffer.data(), n);
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_DigestFinal_ex(ctx.get(), digest, &length);
  static const char* hex = "0123456789abcdef";
  char text[2 * EVP_MAX_MD_SIZE];
  for (unsigned int i = 0; i < length; ++i) {
    text[2 * i] = hex[digest[i] >> 4];
    text[2 * i + 1] = hex[digest[i] & 15];
  }
  return std::string(text, 2 * static_cast<size_t>(length));
}

}  // namespace

std::string sha256_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw RunError("cannot open '" + path.string() + "' to hash it");
  std::string hash = sha256_of(
      [&](char* buffer, size_t capacity) {
        in.read(buffer, static_cast<std::streamsize>(capacity));
        return static_cast<size_t>(in.gcount());
      },
      path.string());
  if (in.bad()) throw RunError("cannot read '" + path.string() + "' to hash it");
  return hash;
}

std::string sha256_text(const std::string& bytes) {
  size_t offset = 0;
  return sha256_of(
      [&](char* buffer, size_t capacity) {
        const size_t n = std::min(capacity, bytes.size() - offset);
        std::copy_n(bytes.data() + offset, n, buffer);
        offset += n;
        return n;
      },
      "a text in memory");
}

nlohmann::ordered_json FileRecord::json() const {
  return {{"name", name}, {"path", path}, {"bytes", bytes}, {"sha256", sha256}};
}

FileRecord record_file(const fs::path& path) {
  FileRecord r;
  r.name = path.filename().string();
  r.path = path.string();
  std::error_code ec;
  r.bytes = fs::file_size(path, ec);
  if (ec) throw RunError("cannot read the size of '" + path.string() + "': " + ec.message());
  r.sha256 = sha256_file(path);
  return r;
}

nlohmann::ordered_json model_provenance(const std::string& program, const std::string& path,
                                        uint64_t synthetic_seed) {
  nlohmann::ordered_json out;
  if (path.rfind("synthetic:", 0) == 0) {
    out["synthetic"] = path.substr(10);
    out["weight_seed"] = synthetic_seed;
    return out;
  }
  std::vector<fs::path> files;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(path, ec)) {
    const std::string name = entry.path().filename().string();
    const bool weights = entry.path().extension() == ".safetensors" ||
                         name == "model.safetensors.index.json";
    if (entry.is_regular_file() && (weights || name == "config.json" || name == "tokenizer.json"))
      files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  uint64_t total = 0;
  for (const auto& f : files) total += fs::file_size(f, ec);
  if (total > (uint64_t{1} << 30))
    std::fprintf(stderr, "%s: hashing the model's files (%.1f GB) for the results\n",
                 program.c_str(), static_cast<double>(total) / 1e9);
  nlohmann::ordered_json records = nlohmann::ordered_json::array();
  std::string weight_hashes;  // "name sha256\n" per weight file, in name order
  for (const auto& f : files) {
    const FileRecord r = record_file(f);
    if (r.name == "config.json") out["config_sha256"] = r.sha256;
    if (f.extension() == ".safetensors") weight_hashes += r.name + " " + r.sha256 + "\n";
    records.push_back(r.json());
  }
  out["weights_sha256"] = weight_hashes.empty() ? nlohmann::ordered_json(nullptr)
                                                : nlohmann::ordered_json(sha256_text(weight_hashes));
  out["files"] = records;
  return out;
}

nlohmann::ordered_json engine_versions() {
  const uint32_t abi = kvc_abi_version();
  return {{"kvc_version", kvc_version_string()},
          {"c_abi", std::to_string(abi >> 16) + "." + std::to_string(abi & 0xffffu)},
          {"policy_abi", std::to_string(KVC_POLICY_ABI_MAJOR) + "." +
                             std::to_string(KVC_POLICY_ABI_MINOR)}};
}

}  // namespace kvc::hosts

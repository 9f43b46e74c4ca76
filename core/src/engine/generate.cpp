#include "engine/generate.h"

#include <algorithm>

#include "common/error.h"
#include "tokenizer/tokenizer.h"

namespace kvc {

TextStream::TextStream(std::vector<std::string> stops) : stops_(std::move(stops)) {
  for (const auto& s : stops_) longest_ = std::max(longest_, s.size());
}

size_t TextStream::incomplete_tail(std::string_view b) {
  const size_t n = b.size();
  // The last byte that is not a continuation byte (10xxxxxx), within a character's reach.
  size_t j = n;
  for (size_t k = 1; k <= 4 && k <= n; ++k) {
    if ((static_cast<unsigned char>(b[n - k]) & 0xC0) != 0x80) {
      j = n - k;
      break;
    }
  }
  if (j == n) return n;
  const auto lead = static_cast<unsigned char>(b[j]);
  size_t need = 0;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (lead >= 0xC2 && lead <= 0xDF) {
    need = 2;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    need = 3;
    if (lead == 0xE0) lo = 0xA0;
    if (lead == 0xED) hi = 0x9F;
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    need = 4;
    if (lead == 0xF0) lo = 0x90;
    if (lead == 0xF4) hi = 0x8F;
  } else {
    return n;  // ASCII, or a byte that never starts a character
  }
  const size_t have = n - j;
  if (have >= need) return n;  // complete (valid or not): nothing to wait for
  if (have >= 2) {
    const auto second = static_cast<unsigned char>(b[j + 1]);
    if (second < lo || second > hi) return n;  // already invalid
  }
  return j;
}

TextStream::Out TextStream::push(std::string_view bytes) {
  Out out;
  if (stopped_) return out;
  pending_.append(bytes.data(), bytes.size());
  // A stop sequence complete in what is pending (a match can only start there: text that
  // could begin one is never released).
  size_t best = std::string::npos;
  for (size_t i = 0; i < stops_.size(); ++i) {
    const size_t pos = pending_.find(stops_[i]);
    if (pos != std::string::npos && (best == std::string::npos || pos < best)) {
      best = pos;
      out.stop = static_cast<int32_t>(i);
    }
  }
  if (out.stop >= 0) {
    out.text = utf8::replace_invalid(std::string_view(pending_).substr(0, best));
    pending_.clear();
    stopped_ = true;
    return out;
  }
  // Hold the earliest suffix that is a proper prefix of a stop sequence.
  size_t cut = pending_.size();
  const size_t first = pending_.size() >= longest_ ? pending_.size() - longest_ + 1 : 0;
  for (size_t q = first; q < pending_.size() && cut == pending_.size(); ++q) {
    const std::string_view tail = std::string_view(pending_).substr(q);
    for (const auto& s : stops_) {
      if (tail.size() < s.size() && s.compare(0, tail.size(), tail) == 0) {
        cut = q;
        break;
      }
    }
  }
  cut = std::min(cut, incomplete_tail(std::string_view(pending_).substr(0, cut)) );
  out.text = utf8::replace_invalid(std::string_view(pending_).substr(0, cut));
  pending_.erase(0, cut);
  return out;
}

std::string TextStream::flush() {
  std::string text = stopped_ ? std::string() : utf8::replace_invalid(pending_);
  pending_.clear();
  return text;
}

kvc_generate_result generate(Session& session, Sampler& sampler, const int32_t* prompt,
                             size_t n_prompt, const GenerateConfig& config, int32_t* tokens,
                             size_t tokens_capacity) {
  const Model& model = session.model();
  const Tokenizer* tokenizer = model.tokenizer.get();
  if (config.max_tokens < 0)
    fail(KVC_ERR_INVALID_ARGUMENT, "kvc_generate_options.max_tokens is " +
                                       std::to_string(config.max_tokens) + "; expected >= 0");
  if (n_prompt == 0)
    fail(KVC_ERR_INVALID_ARGUMENT,
         "kvc_generate: the prompt is empty; at least one token is needed (the first token is "
         "sampled from the logits of the prompt's last token)");
  for (size_t i = 0; i < config.stop.size(); ++i) {
    if (config.stop[i].empty())
      fail(KVC_ERR_INVALID_ARGUMENT, "kvc_generate_options.stop[" + std::to_string(i) +
                                         "] is empty; a stop sequence needs at least one byte");
  }
  if (!config.stop.empty() && tokenizer == nullptr)
    fail(KVC_ERR_INVALID_ARGUMENT,
         "kvc_generate_options.stop: the model '" + model.path +
             "' has no tokenizer, so its tokens have no text to match stop sequences against");
  if (tokens != nullptr && tokens_capacity < static_cast<size_t>(config.max_tokens))
    fail(KVC_ERR_BUFFER_TOO_SMALL, "kvc_generate: the tokens buffer holds " +
                                       std::to_string(tokens_capacity) + " ids, max_tokens is " +
                                       std::to_string(config.max_tokens));

  // The ids that can come out: the rows of the output matrix that name a token.
  const int32_t rows = model.config.vocab_size;
  size_t n_vocab = static_cast<size_t>(rows);
  std::vector<uint8_t> allowed;
  if (tokenizer != nullptr) {
    n_vocab = std::min<size_t>(n_vocab, static_cast<size_t>(tokenizer->vocab_size()));
    allowed.resize(n_vocab);
    for (size_t i = 0; i < n_vocab; ++i)
      allowed[i] = tokenizer->id_bytes(static_cast<int32_t>(i)) != nullptr;
  }

  kvc_generate_result result{};
  result.struct_size = sizeof(result);
  result.stop_reason = KVC_STOP_MAX_TOKENS;
  result.stop_index = -1;
  std::vector<float> logits(static_cast<size_t>(rows));
  if (config.max_tokens == 0) {
    session.step(prompt, static_cast<int64_t>(n_prompt), KVC_LOGITS_NONE, nullptr, 0);
    sampler.accept(prompt, n_prompt);
    return result;
  }
  session.step(prompt, static_cast<int64_t>(n_prompt), KVC_LOGITS_LAST, logits.data(),
               logits.size());
  sampler.accept(prompt, n_prompt);

  TextStream stream(config.stop);
  for (int32_t i = 0; i < config.max_tokens; ++i) {
    const int32_t token =
        sampler.sample(logits.data(), n_vocab, allowed.empty() ? nullptr : allowed.data());
    if (tokens) tokens[i] = token;
    result.n_tokens = i + 1;
    bool done = false;
    std::string piece;
    const auto stop_token =
        std::find(config.stop_tokens.begin(), config.stop_tokens.end(), token);
    if (stop_token != config.stop_tokens.end()) {
      piece = stream.flush();
      result.stop_reason = KVC_STOP_TOKEN;
      result.stop_index = static_cast<int32_t>(stop_token - config.stop_tokens.begin());
      done = true;
    } else {
      TextStream::Out out;
      if (tokenizer != nullptr) out = stream.push(*tokenizer->id_bytes(token));
      piece = std::move(out.text);
      if (out.stop >= 0) {
        result.stop_reason = KVC_STOP_SEQUENCE;
        result.stop_index = out.stop;
        done = true;
      } else if (i + 1 == config.max_tokens) {
        piece += stream.flush();
        done = true;  // KVC_STOP_MAX_TOKENS
      }
    }
    result.text_len += piece.size();
    if (config.on_token != nullptr &&
        config.on_token(config.user_data, token, piece.c_str(), piece.size()) != 0 && !done) {
      result.stop_reason = KVC_STOP_CALLBACK;
      done = true;
    }
    if (done) break;
    session.step(&token, 1, KVC_LOGITS_LAST, logits.data(), logits.size());
  }
  return result;
}

}  // namespace kvc

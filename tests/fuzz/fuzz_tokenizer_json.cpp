// tokenizer.json: kvc::Tokenizer::load_json on arbitrary text. A tokenizer that loads must then
// encode and decode without failing in any way other than a kvc::Error.
#include "fuzz_util.h"
#include "tokenizer/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  std::unique_ptr<kvc::Tokenizer> tok;
  try {
    tok = kvc::Tokenizer::load_json(text, "fuzz/tokenizer.json");
  } catch (const kvc::Error& e) {
    kvc::fuzz::check_error(e);
    return 0;
  }
  try {
    const std::vector<int32_t> ids =
        tok->encode("In the beginning, \xc3\xa9t\xc3\xa9 42 <|endoftext|>!\xff");
    for (int32_t id : ids)
      if (id < 0 || id >= tok->vocab_size()) kvc::fuzz::broken("encode produced an invalid id");
    (void)tok->decode(ids);
    for (int32_t id = 0; id < tok->vocab_size() && id < 64; ++id) {
      try {
        const std::string& s = tok->id_to_token(id);
        if (tok->token_to_id(s) < 0) kvc::fuzz::broken("token_to_id misses a listed token");
      } catch (const kvc::Error& e) {  // ids may have gaps
        kvc::fuzz::check_error(e);
      }
    }
  } catch (const kvc::Error& e) {
    kvc::fuzz::check_error(e);
  }
  return 0;
}

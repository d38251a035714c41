// kvforge tokenize: a tokenizer.json's encoding of text (or decoding of ids) as JSON, for checking a tokenizer
// against Hugging Face `tokenizers` and for tests.
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/token_ids.h"
#include "runtime/input_error.h"
#include "runtime/json_file.h"
#include "runtime/tokenizer.h"

namespace kvforge {
namespace {

struct TokenizeArgs {
  std::string tokenizer, model;
  std::vector<std::string> texts, files, decode;
  bool no_special_tokens = false;
  bool skip_special_tokens = false;
};

void run_tokenize(const TokenizeArgs& args) {
  if (args.tokenizer.empty() == args.model.empty())
    fail_input("command line", "--tokenizer", "give one of --tokenizer FILE.json or --model DIR");
  if (args.texts.empty() && args.files.empty() && args.decode.empty())
    fail_input("command line", "--text", "nothing to do: pass --text TEXT, --file FILE or --decode 1,2,3");
  const Tokenizer tokenizer = Tokenizer::from_file(args.tokenizer.empty() ? args.model + "/tokenizer.json" : args.tokenizer);
  // One JSON object per input, in the order given: texts, then files, then id lists.
  nlohmann::json results = nlohmann::json::array();
  auto encode = [&](const std::string& text, nlohmann::json entry) {
    const std::vector<int64_t> ids = tokenizer.encode(text, !args.no_special_tokens);
    nlohmann::json tokens = nlohmann::json::array();
    for (int64_t id : ids) tokens.push_back(tokenizer.id_to_token(id).value_or(""));
    entry["ids"] = ids;
    entry["tokens"] = std::move(tokens);
    results.push_back(std::move(entry));
  };
  for (const std::string& text : args.texts) encode(text, {{"text", text}});
  for (const std::string& file : args.files) encode(read_text_file(file), {{"file", file}});
  for (const std::string& list : args.decode) {
    const std::vector<int64_t> ids = parse_token_ids(list, tokenizer.vocab_size(), "--decode");
    results.push_back({{"ids", ids}, {"text", tokenizer.decode(ids, args.skip_special_tokens)}});
  }
  // Decoded bytes that are not UTF-8 (ids that cut a character) print with U+FFFD rather than failing the dump.
  std::cout << results.dump(-1, ' ', /*ensure_ascii=*/false, nlohmann::json::error_handler_t::replace) << "\n";
}

}  // namespace

void add_tokenize_command(CLI::App& app) {
  auto args = std::make_shared<TokenizeArgs>();
  CLI::App* command =
      app.add_subcommand("tokenize", "Encode text (or decode token ids) with a tokenizer.json; prints JSON");
  command->add_option("--tokenizer", args->tokenizer, "tokenizer.json file");
  command->add_option("--model", args->model, "model directory (its tokenizer.json)");
  command->add_option("--text", args->texts, "text to encode; repeatable")->allow_extra_args(false);
  command->add_option("--file", args->files, "file whose whole text is encoded; repeatable")->allow_extra_args(false);
  command->add_option("--decode", args->decode, "token ids to decode, e.g. 1,2,3; repeatable")->allow_extra_args(false);
  command->add_flag("--no-special-tokens", args->no_special_tokens, "encode without the template (e.g. no BOS)");
  command->add_flag("--skip-special-tokens", args->skip_special_tokens, "decode without special tokens");
  command->callback([args] { run_tokenize(*args); });
}

}  // namespace kvforge

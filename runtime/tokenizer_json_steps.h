#pragma once
// Reading the chains of tokenizer.json: "normalizer", "pre_tokenizer" and "decoder" (Sequences flattened into
// their steps). Unsupported types are InputErrors naming the field and listing the supported ones. Internal to the
// tokenizer; tokenizer_json.cpp calls these.
#include <string>
#include <vector>

#include "runtime/decoder.h"
#include "runtime/normalizer.h"
#include "runtime/pre_tokenizer.h"
#include "runtime/tokenizer_json_fields.h"

namespace kvforge::detail {

void read_normalizer(const Json& json, const std::string& field, const Source& source,
                     std::vector<NormalizeStep>& steps, int depth = 0);
void read_pre_tokenizer(const Json& json, const std::string& field, const Source& source,
                        std::vector<PreTokenizeStep>& steps, int depth = 0);
void read_decoder(const Json& json, const std::string& field, const Source& source, std::vector<DecodeStep>& steps,
                  int depth = 0);

}  // namespace kvforge::detail

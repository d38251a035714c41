#pragma once
// Reading whole files and JSON documents with errors that name the file.
#include <nlohmann/json.hpp>
#include <string>

namespace kvforge {

// Whole file as bytes; a missing or unreadable file is an InputError naming it.
std::string read_text_file(const std::string& path);

// Parses JSON text; malformed text is an InputError naming `source` and the byte offset.
nlohmann::json parse_json(const std::string& text, const std::string& source);

nlohmann::json read_json_file(const std::string& path);

// Human-readable JSON type name for error messages ("number", "string", ...).
std::string json_type_name(const nlohmann::json& value);

}  // namespace kvforge

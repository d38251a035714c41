#pragma once
// The safetensors format: an 8-byte little-endian header length, a JSON header mapping tensor names to
// {dtype, shape, data_offsets} (plus an optional "__metadata__" string map), then the raw data.
// Reading memory-maps the file and validates every entry before anything is used; writing is atomic.
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace kvforge {

enum class DType { kF64, kF32, kF16, kBF16, kI64, kI32, kI16, kI8, kU8, kBool };

size_t dtype_size(DType dtype);
const char* dtype_name(DType dtype);  // the safetensors spelling: "F32", "BF16", ...

struct TensorEntry {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offsets within the data section
  uint64_t end = 0;
  int64_t numel() const;
};

class SafetensorsFile {
 public:
  // Memory-maps and validates `path`; any inconsistency is an InputError naming the file and field.
  static SafetensorsFile open(const std::string& path);
  // Validates an in-memory copy (used by the fuzzer and tests); `source` names it in errors.
  static SafetensorsFile from_bytes(std::string bytes, const std::string& source);

  const std::string& source() const { return source_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::vector<TensorEntry>& tensors() const { return tensors_; }  // in data order
  const TensorEntry* find(const std::string& name) const;
  const uint8_t* data(const TensorEntry& entry) const { return data_ + entry.begin; }

 private:
  void parse(const uint8_t* bytes, uint64_t size);

  std::string source_;
  std::shared_ptr<const void> storage_;  // keeps the mapping (or buffer) alive
  const uint8_t* data_ = nullptr;
  std::map<std::string, std::string> metadata_;
  std::vector<TensorEntry> tensors_;
  std::map<std::string, size_t> index_;
};

// One tensor to write: raw bytes in `dtype`, row-major.
struct TensorBytes {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  size_t size = 0;
};

// Writes a safetensors file to `path.tmp` then renames it, so a crash never leaves a half-written file.
void write_safetensors(const std::string& path, const std::vector<TensorBytes>& tensors,
                       const std::map<std::string, std::string>& metadata);

// A Hugging Face checkpoint's tensors: one `model.safetensors`, or shards listed by
// `model.safetensors.index.json`. Every name in the index must exist in the shard it names.
class CheckpointTensors {
 public:
  static CheckpointTensors open_dir(const std::string& dir);

  const std::string& dir() const { return dir_; }
  // The file and entry holding `name`, or nullptr.
  const TensorEntry* find(const std::string& name, const SafetensorsFile** file) const;
  std::vector<std::string> names() const;

 private:
  std::string dir_;
  std::vector<SafetensorsFile> files_;
  std::map<std::string, size_t> file_of_;
};

}  // namespace kvforge

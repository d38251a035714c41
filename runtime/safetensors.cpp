#include "runtime/safetensors.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runtime/input_error.h"
#include "runtime/json_file.h"

namespace kvforge {
namespace {

using nlohmann::json;

constexpr uint64_t kMaxHeaderBytes = 100ull << 20;  // the reference implementation's limit

bool parse_dtype(const std::string& name, DType* dtype) {
  static const std::map<std::string, DType> kByName = {
      {"F64", DType::kF64}, {"F32", DType::kF32}, {"F16", DType::kF16}, {"BF16", DType::kBF16},
      {"I64", DType::kI64}, {"I32", DType::kI32}, {"I16", DType::kI16}, {"I8", DType::kI8},
      {"U8", DType::kU8},   {"BOOL", DType::kBool}};
  auto it = kByName.find(name);
  if (it == kByName.end()) return false;
  *dtype = it->second;
  return true;
}

// Product of the shape times the item size, or false on overflow.
bool byte_count(const std::vector<int64_t>& shape, DType dtype, uint64_t* bytes) {
  uint64_t total = dtype_size(dtype);
  for (int64_t dim : shape) {
    if (dim != 0 && total > std::numeric_limits<uint64_t>::max() / static_cast<uint64_t>(dim)) return false;
    total *= static_cast<uint64_t>(dim);
  }
  *bytes = total;
  return true;
}

struct Mapping {
  void* address = nullptr;
  size_t size = 0;
  ~Mapping() {
    if (address != nullptr && address != MAP_FAILED) munmap(address, size);
  }
};

}  // namespace

size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::kF64: case DType::kI64: return 8;
    case DType::kF32: case DType::kI32: return 4;
    case DType::kF16: case DType::kBF16: case DType::kI16: return 2;
    case DType::kI8: case DType::kU8: case DType::kBool: return 1;
  }
  return 1;
}

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kF64: return "F64";
    case DType::kF32: return "F32";
    case DType::kF16: return "F16";
    case DType::kBF16: return "BF16";
    case DType::kI64: return "I64";
    case DType::kI32: return "I32";
    case DType::kI16: return "I16";
    case DType::kI8: return "I8";
    case DType::kU8: return "U8";
    case DType::kBool: return "BOOL";
  }
  return "?";
}

int64_t TensorEntry::numel() const {
  int64_t total = 1;
  for (int64_t dim : shape) total *= dim;
  return total;
}

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) fail_input(path, "", std::string("cannot open: ") + std::strerror(errno));
  struct stat info {};
  if (fstat(fd, &info) != 0 || !S_ISREG(info.st_mode)) {
    ::close(fd);
    fail_input(path, "", "expected a regular file");
  }
  auto mapping = std::make_shared<Mapping>();
  mapping->size = static_cast<size_t>(info.st_size);
  if (mapping->size > 0) {
    mapping->address = mmap(nullptr, mapping->size, PROT_READ, MAP_PRIVATE, fd, 0);
  }
  ::close(fd);
  if (mapping->address == MAP_FAILED) fail_input(path, "", std::string("cannot map: ") + std::strerror(errno));
  SafetensorsFile file;
  file.source_ = path;
  file.storage_ = mapping;
  file.parse(static_cast<const uint8_t*>(mapping->address), mapping->size);
  return file;
}

SafetensorsFile SafetensorsFile::from_bytes(std::string bytes, const std::string& source) {
  auto buffer = std::make_shared<std::string>(std::move(bytes));
  SafetensorsFile file;
  file.source_ = source;
  file.storage_ = buffer;
  file.parse(reinterpret_cast<const uint8_t*>(buffer->data()), buffer->size());
  return file;
}

void SafetensorsFile::parse(const uint8_t* bytes, uint64_t size) {
  if (size < 8) fail_input(source_, "header length", "file is " + std::to_string(size) + " bytes, expected at least 8");
  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | bytes[i];
  if (header_size > kMaxHeaderBytes || header_size > size - 8)
    fail_input(source_, "header length",
               std::to_string(header_size) + " bytes does not fit in a file of " + std::to_string(size) + " bytes");
  std::string header_text(reinterpret_cast<const char*>(bytes + 8), header_size);
  json header = parse_json(header_text, source_ + " (header)");
  if (!header.is_object()) fail_input(source_, "header", "expected a JSON object");
  data_ = bytes + 8 + header_size;
  const uint64_t data_size = size - 8 - header_size;

  for (const auto& [name, value] : header.items()) {
    if (name == "__metadata__") {
      if (!value.is_object()) fail_input(source_, "__metadata__", "expected an object of strings");
      for (const auto& [key, text] : value.items()) {
        if (!text.is_string()) fail_input(source_, "__metadata__." + key, "expected a string");
        metadata_[key] = text.get<std::string>();
      }
      continue;
    }
    const std::string field = "tensor '" + name + "'";
    if (!value.is_object()) fail_input(source_, field, "expected an object with dtype, shape, data_offsets");
    TensorEntry entry;
    entry.name = name;
    if (!value.contains("dtype") || !value["dtype"].is_string() ||
        !parse_dtype(value["dtype"].get<std::string>(), &entry.dtype))
      fail_input(source_, field + ".dtype", "expected one of F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL");
    if (!value.contains("shape") || !value["shape"].is_array())
      fail_input(source_, field + ".shape", "expected a list of non-negative integers");
    for (const json& dim : value["shape"]) {
      if (!dim.is_number_unsigned()) fail_input(source_, field + ".shape", "expected a list of non-negative integers");
      uint64_t extent = dim.get<uint64_t>();
      if (extent > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        fail_input(source_, field + ".shape", "dimension too large");
      entry.shape.push_back(static_cast<int64_t>(extent));
    }
    const json* offsets = value.contains("data_offsets") ? &value["data_offsets"] : nullptr;
    if (offsets == nullptr || !offsets->is_array() || offsets->size() != 2 || !(*offsets)[0].is_number_unsigned() ||
        !(*offsets)[1].is_number_unsigned())
      fail_input(source_, field + ".data_offsets", "expected [begin, end] with non-negative integers");
    entry.begin = (*offsets)[0].get<uint64_t>();
    entry.end = (*offsets)[1].get<uint64_t>();
    if (entry.begin > entry.end || entry.end > data_size)
      fail_input(source_, field + ".data_offsets",
                 "[" + std::to_string(entry.begin) + ", " + std::to_string(entry.end) +
                     "] out of range for a data section of " + std::to_string(data_size) + " bytes");
    uint64_t expected = 0;
    if (!byte_count(entry.shape, entry.dtype, &expected) || expected != entry.end - entry.begin)
      fail_input(source_, field + ".data_offsets",
                 "holds " + std::to_string(entry.end - entry.begin) + " bytes but shape and dtype need " +
                     std::to_string(expected));
    tensors_.push_back(std::move(entry));
  }
  // Like the reference reader: tensors must tile the data section exactly, with no overlap or gap.
  std::sort(tensors_.begin(), tensors_.end(), [](const TensorEntry& a, const TensorEntry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t cursor = 0;
  for (const TensorEntry& entry : tensors_) {
    if (entry.begin != cursor)
      fail_input(source_, "tensor '" + entry.name + "'.data_offsets",
                 entry.begin < cursor ? "overlaps the previous tensor" : "leaves a gap before it");
    cursor = entry.end;
  }
  if (cursor != data_size)
    fail_input(source_, "data", "section is " + std::to_string(data_size) + " bytes but tensors cover " +
                                    std::to_string(cursor) + " (truncated or trailing bytes)");
  for (size_t i = 0; i < tensors_.size(); ++i) index_[tensors_[i].name] = i;
}

const TensorEntry* SafetensorsFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

void write_safetensors(const std::string& path, const std::vector<TensorBytes>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const TensorBytes& tensor : tensors) {
    uint64_t expected = 0;
    if (!byte_count(tensor.shape, tensor.dtype, &expected) || expected != tensor.size)
      throw std::invalid_argument("write_safetensors: tensor '" + tensor.name + "' has " +
                                  std::to_string(tensor.size) + " bytes, its shape needs " + std::to_string(expected));
    if (header.contains(tensor.name)) throw std::invalid_argument("write_safetensors: duplicate tensor " + tensor.name);
    header[tensor.name] = {{"dtype", dtype_name(tensor.dtype)}, {"shape", tensor.shape},
                           {"data_offsets", {offset, offset + tensor.size}}};
    offset += tensor.size;
  }
  std::string header_text = header.dump();
  header_text.append((8 - header_text.size() % 8) % 8, ' ');  // keeps the data 8-byte aligned
  const std::string temp_path = path + ".tmp";
  {
    std::ofstream out(temp_path, std::ios::binary | std::ios::trunc);
    if (!out) fail_input(path, "", "cannot open for writing");
    uint64_t length = header_text.size();
    char length_bytes[8];
    for (int i = 0; i < 8; ++i) length_bytes[i] = static_cast<char>((length >> (8 * i)) & 0xff);
    out.write(length_bytes, 8);
    out.write(header_text.data(), static_cast<std::streamsize>(header_text.size()));
    for (const TensorBytes& tensor : tensors)
      out.write(static_cast<const char*>(tensor.data), static_cast<std::streamsize>(tensor.size));
    out.flush();
    if (!out) {
      std::remove(temp_path.c_str());
      fail_input(path, "", "write failed (disk full?)");
    }
  }
  if (std::rename(temp_path.c_str(), path.c_str()) != 0) {
    std::remove(temp_path.c_str());
    fail_input(path, "", std::string("cannot rename temporary file: ") + std::strerror(errno));
  }
}

CheckpointTensors CheckpointTensors::open_dir(const std::string& dir) {
  CheckpointTensors checkpoint;
  checkpoint.dir_ = dir;
  struct stat info {};
  if (stat(dir.c_str(), &info) != 0 || !S_ISDIR(info.st_mode))
    fail_input(dir, "", "expected a checkpoint directory (config.json + safetensors)");
  const std::string single = dir + "/model.safetensors";
  const std::string index_path = dir + "/model.safetensors.index.json";
  if (stat(single.c_str(), &info) == 0) {
    checkpoint.files_.push_back(SafetensorsFile::open(single));
    for (const TensorEntry& entry : checkpoint.files_[0].tensors()) checkpoint.file_of_[entry.name] = 0;
    return checkpoint;
  }
  if (stat(index_path.c_str(), &info) != 0)
    fail_input(dir, "", "expected model.safetensors or model.safetensors.index.json, found neither");
  json index = read_json_file(index_path);
  if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object())
    fail_input(index_path, "weight_map", "expected an object mapping tensor names to shard files");
  std::map<std::string, size_t> shard_slot;
  for (const auto& [name, shard] : index["weight_map"].items()) {
    if (!shard.is_string() || shard.get<std::string>().find('/') != std::string::npos)
      fail_input(index_path, "weight_map." + name, "expected a shard file name in the same directory");
    const std::string shard_name = shard.get<std::string>();
    auto slot = shard_slot.find(shard_name);
    if (slot == shard_slot.end()) {
      slot = shard_slot.emplace(shard_name, checkpoint.files_.size()).first;
      checkpoint.files_.push_back(SafetensorsFile::open(dir + "/" + shard_name));
    }
    if (checkpoint.files_[slot->second].find(name) == nullptr)
      fail_input(index_path, "weight_map." + name, "names " + shard_name + ", which has no such tensor");
    checkpoint.file_of_[name] = slot->second;
  }
  return checkpoint;
}

const TensorEntry* CheckpointTensors::find(const std::string& name, const SafetensorsFile** file) const {
  auto it = file_of_.find(name);
  if (it == file_of_.end()) return nullptr;
  *file = &files_[it->second];
  return files_[it->second].find(name);
}

std::vector<std::string> CheckpointTensors::names() const {
  std::vector<std::string> out;
  for (const auto& [name, slot] : file_of_) out.push_back(name);
  return out;
}

}  // namespace kvforge

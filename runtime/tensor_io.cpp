#include "runtime/tensor_io.h"

#include "runtime/input_error.h"

namespace kvforge {

at::ScalarType to_scalar_type(DType dtype) {
  switch (dtype) {
    case DType::kF64: return at::kDouble;
    case DType::kF32: return at::kFloat;
    case DType::kF16: return at::kHalf;
    case DType::kBF16: return at::kBFloat16;
    case DType::kI64: return at::kLong;
    case DType::kI32: return at::kInt;
    case DType::kI16: return at::kShort;
    case DType::kI8: return at::kChar;
    case DType::kU8: return at::kByte;
    case DType::kBool: return at::kBool;
  }
  return at::kFloat;
}

DType to_dtype(at::ScalarType type) {
  switch (type) {
    case at::kDouble: return DType::kF64;
    case at::kFloat: return DType::kF32;
    case at::kHalf: return DType::kF16;
    case at::kBFloat16: return DType::kBF16;
    case at::kLong: return DType::kI64;
    case at::kInt: return DType::kI32;
    case at::kShort: return DType::kI16;
    case at::kChar: return DType::kI8;
    case at::kByte: return DType::kU8;
    case at::kBool: return DType::kBool;
    default: throw std::invalid_argument(std::string("safetensors has no dtype for ") + at::toString(type));
  }
}

at::Tensor view_tensor(const SafetensorsFile& file, const TensorEntry& entry) {
  // The mapping is read-only; callers copy before writing, so dropping const here is safe.
  void* data = const_cast<uint8_t*>(file.data(entry));
  return at::from_blob(data, entry.shape, at::TensorOptions().dtype(to_scalar_type(entry.dtype)));
}

at::Tensor read_tensor(const SafetensorsFile& file, const std::string& name, const at::TensorOptions& options) {
  const TensorEntry* entry = file.find(name);
  if (entry == nullptr) fail_input(file.source(), "tensor '" + name + "'", "missing");
  return view_tensor(file, *entry).to(options, /*non_blocking=*/false, /*copy=*/true);
}

void save_tensors(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                  const std::map<std::string, std::string>& metadata) {
  std::vector<at::Tensor> host;  // keeps the contiguous CPU copies alive until written
  std::vector<TensorBytes> entries;
  host.reserve(tensors.size());
  for (const auto& [name, tensor] : tensors) {
    host.push_back(tensor.detach().to(at::kCPU).contiguous());
    const at::Tensor& copy = host.back();
    entries.push_back({name, to_dtype(copy.scalar_type()), copy.sizes().vec(), copy.data_ptr(), copy.nbytes()});
  }
  write_safetensors(path, entries, metadata);
}

}  // namespace kvforge

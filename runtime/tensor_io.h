#pragma once
// Conversions between safetensors entries and torch tensors.
#include <ATen/ATen.h>

#include "runtime/safetensors.h"

namespace kvforge {

at::ScalarType to_scalar_type(DType dtype);
DType to_dtype(at::ScalarType type);  // throws std::invalid_argument for types safetensors lacks

// A tensor viewing the file's bytes (no copy); valid while `file` lives. Clone or `.to()` to keep it.
at::Tensor view_tensor(const SafetensorsFile& file, const TensorEntry& entry);

// Reads `name` from a checkpoint or safetensors file, copied to `options`; missing is an InputError.
at::Tensor read_tensor(const SafetensorsFile& file, const std::string& name, const at::TensorOptions& options);

// Writes CPU copies of `tensors` atomically (see write_safetensors).
void save_tensors(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                  const std::map<std::string, std::string>& metadata);

}  // namespace kvforge

#pragma once
// "auto" | "cpu" | "cuda" | "cuda:N" and "auto" | dtype names, resolved once for a command.
#include <ATen/ATen.h>
#include <string>

namespace kvforge {

at::Device parse_device(const std::string& name, const std::string& origin);
// "auto" means bfloat16 on CUDA and float32 on the CPU.
at::ScalarType parse_model_dtype(const std::string& name, const at::Device& device, const std::string& origin);

}  // namespace kvforge

#pragma once
// Attention kernels are compiled once per query-group size (query heads per KV head, 1 to 8), so a group's
// scores stay in registers; this picks the instantiation for a group known only at run time.
#include <cuda_runtime_api.h>

#include <cstdint>
#include <type_traits>

namespace kvforge::kernels {

// launch(std::integral_constant<int, group>{}) for group 1..8; cudaErrorInvalidValue otherwise.
template <typename Launch>
cudaError_t dispatch_group(int64_t group, Launch&& launch) {
  switch (group) {
    case 1:
      return launch(std::integral_constant<int, 1>{});
    case 2:
      return launch(std::integral_constant<int, 2>{});
    case 3:
      return launch(std::integral_constant<int, 3>{});
    case 4:
      return launch(std::integral_constant<int, 4>{});
    case 5:
      return launch(std::integral_constant<int, 5>{});
    case 6:
      return launch(std::integral_constant<int, 6>{});
    case 7:
      return launch(std::integral_constant<int, 7>{});
    case 8:
      return launch(std::integral_constant<int, 8>{});
    default:
      return cudaErrorInvalidValue;
  }
}

}  // namespace kvforge::kernels

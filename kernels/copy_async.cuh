#pragma once
// Asynchronous global-to-shared copies (sm_80+, cp.async): staged loads that hold no registers while in flight.
#include <cstdint>

namespace kvforge::kernels {

// One copy of BYTES (4, 8 or 16; 16 bypasses L1).
template <int BYTES>
__device__ __forceinline__ void copy_async(void* shared, const void* global) {
  const auto address = static_cast<unsigned>(__cvta_generic_to_shared(shared));
  if constexpr (BYTES == 16)
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(address), "l"(global));
  else
    asm volatile("cp.async.ca.shared.global [%0], [%1], %2;\n" ::"r"(address), "l"(global), "n"(BYTES));
}
// Closes the group of copies started since the last commit.
__device__ __forceinline__ void commit_copies() { asm volatile("cp.async.commit_group;\n"); }
// Waits until at most PENDING of this thread's committed groups are still in flight.
template <int PENDING>
__device__ __forceinline__ void wait_copies() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(PENDING));
}

// A warp's copy of `bytes` (a multiple of 16) in 16-byte pieces.
__device__ __forceinline__ void copy_rows_async(uint8_t* shared, const uint8_t* global, int bytes, int lane) {
  for (int piece = lane; piece < bytes / 16; piece += 32) copy_async<16>(shared + 16 * piece, global + 16 * piece);
}

}  // namespace kvforge::kernels

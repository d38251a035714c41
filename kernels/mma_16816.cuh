#pragma once
// The tensor-core tile the decode kernels share (low_rank_decode_attention.cu, quantized_decode_attention.cu).
#include <cstdint>

namespace kvforge::kernels {

// D += A·B for one m16n8k16 tile: A 16×16 bf16 row-major, B 16×8 bf16 column-major, D 16×8 fp32. With lane = 4i + j,
// a lane holds A rows i and i + 8, columns 2j, 2j + 1 (regs 0, 1) and 2j + 8, 2j + 9 (regs 2, 3); B rows 2j, 2j + 1
// (b0) and 2j + 8, 2j + 9 (b1) of column i; D rows i and i + 8, columns 2j and 2j + 1.
__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

}  // namespace kvforge::kernels

// Forward of the CPU scan.
#pragma once

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "cpu_scan_inputs.h"

namespace vimbench_cpu_scan {

constexpr int64_t kTimeBlock = 256;  // forward: positions prepared and scanned per pass (buffers stay in L1/L2)

// forward: channels scanned together, one per vector lane (64 bytes: one AVX-512 register, two AVX2 ones)
template <typename T>
constexpr int64_t kLanes = 64 / sizeof(T);

// A tile of kLanes channels of one group scans together, one channel per vector lane: per position and
// state, exp(dt*A), the state update and the output sum are plain lane-wise vector ops (B_t[n] and C_t[n]
// are shared by the tile, so they are broadcasts), with no horizontal sums and kLanes independent chains.

template <typename T>
struct TileScratch {
  static constexpr int64_t W = kLanes<T>;
  T *u, *dt_rows, *dtu_rows, *y_rows;  // (W, kTimeBlock): one lane's positions per row
  T *z_row, *gate, *out_row;           // kTimeBlock each
  T *dt, *dtu, *y;                     // (kTimeBlock, W) tiles
  T *A, *state;                        // (N, W); A scaled by log2(e)

  explicit TileScratch(int64_t nstate) {
    T* p = thread_scratch<T, 0>(7 * W * kTimeBlock + 3 * kTimeBlock + 2 * nstate * W);
    for (T** slot : {&u, &dt_rows, &dtu_rows, &y_rows, &dt, &dtu, &y}) {
      *slot = p;
      p += W * kTimeBlock;
    }
    for (T** slot : {&z_row, &gate, &out_row}) {
      *slot = p;
      p += kTimeBlock;
    }
    A = p;
    state = p + nstate * W;
  }
};

// dst (16 rows, stride ld_dst) = transpose of src (`rows` rows of 16 values, stride ld_src): the
// between-layout copies of a tile, 16 positions at a time (ATen's in-register transposes for fp32)
template <typename T>
inline void transpose_16(const T* src, int64_t ld_src, T* dst, int64_t ld_dst, int64_t rows) {
#if !defined(VIMBENCH_CPU_SCAN_SCALAR) && defined(CPU_CAPABILITY_AVX512)
  if constexpr (std::is_same_v<T, float>) {
    at::vec::transpose_mxn<float>(src, ld_src, dst, ld_dst, static_cast<int>(rows), 16);
    return;
  }
#elif !defined(VIMBENCH_CPU_SCAN_SCALAR) && defined(CPU_CAPABILITY_AVX2)
  if constexpr (std::is_same_v<T, float>) {
    if (rows == 16) {
      at::vec::transpose_mxn<float, 16, 16>(src, ld_src, dst, ld_dst);
      return;
    }
  }
#endif
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < 16; ++j) dst[j * ld_dst + i] = src[i * ld_src + j];
  }
}

// How a tile's output reaches `out`: gated (one direction alone), ungated (the first of two directions), or
// gated and added to what the first direction left, then scaled (the second): dst = (dst*g + row*g) * scale,
// the arithmetic of adding two separately gated outputs, with silu(z) computed once.
enum class TileOut { kWrite, kWriteUngated, kAddGated };

// positions [t0, t1) of the tile, in scan order. kN > 0 fixes N at compile time (the n loop unrolls).
template <typename T, int kN>
void scan_tile_block(const ScanInputs<T>& in, const T* B_row, const T* C_row, TileScratch<T>& s, int64_t t0,
                     int64_t t1) {
  constexpr int64_t W = kLanes<T>;
  constexpr int64_t VS = Vec<T>::size();
  constexpr int64_t KV = W / VS;  // vectors per tile: 1 (AVX-512), 2 (AVX2), 4 (NEON), 16 (scalar build)
  static_assert(W % VS == 0, "a tile is a whole number of vectors");
  const int64_t nstate = kN > 0 ? kN : in.nstate;
  for (int64_t i = 0; i < t1 - t0; ++i) {
    const int64_t t = in.reverse ? t1 - 1 - i : t0 + i;
    const T* dt = s.dt + (t - t0) * W;
    const T* dtu = s.dtu + (t - t0) * W;
    const T* bt = B_row + t * in.B.sl;
    const T* ct = C_row + t * in.C.sl;
    Vec<T> dt_v[KV], dtu_v[KV], acc[KV];
    for (int64_t k = 0; k < KV; ++k) {
      dt_v[k] = Vec<T>::loadu(dt + k * VS);
      dtu_v[k] = Vec<T>::loadu(dtu + k * VS);
      acc[k] = Vec<T>(T(0));
    }
    for (int64_t n = 0; n < nstate; ++n) {
      const Vec<T> b(bt[n]), c(ct[n]);
      const T* a = s.A + n * W;
      T* h = s.state + n * W;
      for (int64_t k = 0; k < KV; ++k) {
        const Vec<T> decay = exp2_fast(dt_v[k] * Vec<T>::loadu(a + k * VS));
        const Vec<T> state = fmadd(decay, Vec<T>::loadu(h + k * VS), dtu_v[k] * b);
        state.store(h + k * VS);
        acc[k] = fmadd(state, c, acc[k]);
      }
    }
    T* y = s.y + (t - t0) * W;
    for (int64_t k = 0; k < KV; ++k) acc[k].store(y + k * VS);
  }
}

// channels [e0, e0 + lanes) of batch b, all in one group. last_state may be null.
template <typename T>
void forward_tile(const ScanInputs<T>& in, int64_t b, int64_t e0, int64_t lanes, TileScratch<T>& s, T* out,
                  T* last_state, TileOut mode = TileOut::kWrite, T scale = T(1)) {
  constexpr int64_t W = kLanes<T>;
  constexpr int64_t kRows = kTimeBlock;  // row stride of the (W, kTimeBlock) buffers
  const int64_t length = in.length, nstate = in.nstate;
  const int64_t g = in.group_of(e0);
  const T* B_row = in.B.row(b, g);
  const T* C_row = in.C.row(b, g);
  std::fill(s.A, s.A + nstate * W, T(0));  // idle lanes: A = dt = dtu = 0 keeps them finite
  std::fill(s.state, s.state + nstate * W, T(0));
  std::fill(s.dt_rows + lanes * kRows, s.dt_rows + W * kRows, T(0));
  std::fill(s.dtu_rows + lanes * kRows, s.dtu_rows + W * kRows, T(0));
  for (int64_t w = 0; w < lanes; ++w) {
    for (int64_t n = 0; n < nstate; ++n) s.A[n * W + w] = in.A[(e0 + w) * nstate + n] * kLog2e<T>;
  }
  const int64_t blocks = (length + kTimeBlock - 1) / kTimeBlock;
  for (int64_t k = 0; k < blocks; ++k) {
    const int64_t t0 = (in.reverse ? blocks - 1 - k : k) * kTimeBlock;
    const int64_t t1 = std::min(length, t0 + kTimeBlock);
    const int64_t count = t1 - t0;
    const int64_t padded = (count + 15) / 16 * 16;  // positions past count are copied, never read
    for (int64_t w = 0; w < lanes; ++w) {
      prepare_range(in, b, e0 + w, t0, t1, s.u + w * kRows, s.dt_rows + w * kRows, s.dtu_rows + w * kRows,
                    static_cast<T*>(nullptr));
    }
    for (int64_t t = 0; t < padded; t += 16) {
      transpose_16(s.dt_rows + t, kRows, s.dt + t * W, W, W);
      transpose_16(s.dtu_rows + t, kRows, s.dtu + t * W, W, W);
    }
    if (nstate == 16) {
      scan_tile_block<T, 16>(in, B_row, C_row, s, t0, t1);
    } else {
      scan_tile_block<T, 0>(in, B_row, C_row, s, t0, t1);
    }
    for (int64_t t = 0; t < padded; t += 16) transpose_16(s.y + t * W, W, s.y_rows + t, kRows, 16);
    for (int64_t w = 0; w < lanes; ++w) {
      const int64_t e = e0 + w;
      const Vec<T> D(in.D ? in.D[e] : T(0));
      const T* u = s.u + w * kRows;
      const T* y = s.y_rows + w * kRows;
      T* dst = out + (b * in.dim + e) * length + t0;
      T* row = mode == TileOut::kAddGated ? s.out_row : dst;
      for_each_vector<T>(count, [&](int64_t t, int64_t m) {
        fmadd(D, Vec<T>::loadu(u + t, m), Vec<T>::loadu(y + t, m)).store(row + t, m);
      });
      const bool gated = in.z.data && mode != TileOut::kWriteUngated;
      if (gated) {
        in.z.load_range(b, e, t0, t1, s.z_row);
        silu_row(s.z_row, count, s.gate, static_cast<T*>(nullptr));
      }
      if (mode == TileOut::kAddGated) {
        const Vec<T> factor(scale);
        for_each_vector<T>(count, [&](int64_t t, int64_t m) {
          Vec<T> first = Vec<T>::loadu(dst + t, m), second = Vec<T>::loadu(row + t, m);
          if (gated) {
            const Vec<T> gate = Vec<T>::loadu(s.gate + t, m);
            first = first * gate;
            second = second * gate;
          }
          ((first + second) * factor).store(dst + t, m);
        });
      } else if (gated) {
        for_each_vector<T>(count, [&](int64_t t, int64_t m) {
          (Vec<T>::loadu(dst + t, m) * Vec<T>::loadu(s.gate + t, m)).store(dst + t, m);
        });
      }
    }
  }
  if (!last_state) return;
  for (int64_t w = 0; w < lanes; ++w) {
    T* dst = last_state + (b * in.dim + e0 + w) * nstate;
    for (int64_t n = 0; n < nstate; ++n) dst[n] = s.state[n * W + w];
  }
}

// Every (batch, channel tile) of `in` across the thread pool, each worker with its own scratch:
// body(scratch, b, e0, lanes) with lanes <= W channels starting at e0 (a group's last tile may be partial).
template <typename T, typename Body>
void parallel_over_tiles(const ScanInputs<T>& in, const Body& body) {
  constexpr int64_t W = kLanes<T>;
  const int64_t per_group = in.dim / in.groups;
  const int64_t tiles_per_group = (per_group + W - 1) / W;
  const int64_t tiles = in.batch * in.groups * tiles_per_group;
  parallel_dynamic(
      tiles, 1, [&] { return TileScratch<T>(in.nstate); },
      [&](TileScratch<T>& scratch, int64_t tile, int64_t) {
        const int64_t bg = tile / tiles_per_group, k = tile % tiles_per_group;
        const int64_t b = bg / in.groups, g = bg % in.groups;
        const int64_t e0 = g * per_group + k * W;
        body(scratch, b, e0, std::min(W, g * per_group + per_group - e0));
      });
}

template <typename T>
void forward_impl(const ScanInputs<T>& in, T* out, T* last_state) {
  parallel_over_tiles(in, [&](TileScratch<T>& scratch, int64_t b, int64_t e0, int64_t lanes) {
    forward_tile(in, b, e0, lanes, scratch, out, last_state);
  });
}

// Both directions of a Vim mixer in one parallel region (inference): per tile the forward direction writes
// its gated output, the reverse one adds its own and scales the sum, so no second pass over `out`.
// fwd and bwd have the same shape and groups; no last states.
template <typename T>
void bidirectional_forward_impl(const ScanInputs<T>& fwd, const ScanInputs<T>& bwd, T scale, T* out) {
  parallel_over_tiles(fwd, [&](TileScratch<T>& scratch, int64_t b, int64_t e0, int64_t lanes) {
    forward_tile(fwd, b, e0, lanes, scratch, out, static_cast<T*>(nullptr), TileOut::kWriteUngated);
    forward_tile(bwd, b, e0, lanes, scratch, out, static_cast<T*>(nullptr), TileOut::kAddGated, scale);
  });
}

}  // namespace vimbench_cpu_scan

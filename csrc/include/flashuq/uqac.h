// UQAC attention chains (docs/methods.md#uqac; Li et al., arXiv 2503.19168), written once and compiled
// for the CPU (csrc/cpu/uqac.cpp, OpenMP) and CUDA (csrc/cuda/uqac.cu, one block per sequence).
//
// (a) Reduction, steps 1-2: the head choice, the n_heads rows of lowest entropy (ties: lower flat
//     index s = l·H + h; NaN last). The rest of the reduction is the CPU's (csrc/cpu/
//     uqac_reduce_impl.h, vectorised per instruction set) and Triton's (kernels/uqac_reduce.py).
// (b) Backtracking, step 3, one sequence: the greedy rounds of the reference `backtrack`, in absolute
//     positions (I zero rows on top), ties broken by the lower index everywhere.
// (c) The similarity filter, step 4: sim-mean cosine of each chain member's hidden state to the
//     answer tokens' states, threshold, then the k best.
//
// Everything here is sequential per item; the drivers decide what runs in parallel. The row order
// needed by (b) comes from a Ranker (the CPU sorts lazily, a CUDA block sorts the whole row).
#pragma once

#include <cmath>
#include <cstdint>

#include "hd.h"

namespace flashuq {
inline namespace FUQ_ISA_NS {

// ---- (a) reduction ---------------------------------------------------------------------------------

// Total order of the head choice: entropy ascending, NaN last, ties by the lower index.
template <class T>
FUQ_HD bool uqac_ent_before(T ea, int64_t a, T eb, int64_t b) {
  const bool na = ea != ea, nb = eb != eb;
  if (na != nb) return nb;
  if (!na && ea != eb) return ea < eb;
  return a < b;
}

template <class T>
FUQ_HD void uqac_heap_sift(const T* ent, int64_t* heap, int k, int i) {
  // max-heap under uqac_ent_before: the root is the latest of the k kept
  for (;;) {
    const int l = 2 * i + 1, r = l + 1;
    int m = i;
    if (l < k && uqac_ent_before(ent[heap[m]], heap[m], ent[heap[l]], heap[l])) m = l;
    if (r < k && uqac_ent_before(ent[heap[m]], heap[m], ent[heap[r]], heap[r])) m = r;
    if (m == i) return;
    const int64_t t = heap[i]; heap[i] = heap[m]; heap[m] = t;
    i = m;
  }
}

// sel[0..k) <- the k rows of lowest entropy, ordered by uqac_ent_before (a heap select, then heapsort).
template <class T>
FUQ_HD void uqac_select_heads(const T* ent, int64_t LH, int k, int64_t* sel) {
  for (int i = 0; i < k; ++i) sel[i] = i;
  for (int i = k / 2 - 1; i >= 0; --i) uqac_heap_sift(ent, sel, k, i);
  for (int64_t s = k; s < LH; ++s)
    if (uqac_ent_before(ent[s], s, ent[sel[0]], sel[0])) {
      sel[0] = s;
      uqac_heap_sift(ent, sel, k, 0);
    }
  for (int m = k - 1; m > 0; --m) {  // heapsort: ascending
    const int64_t t = sel[0]; sel[0] = sel[m]; sel[m] = t;
    uqac_heap_sift(ent, sel, m, 0);
  }
}

// ---- (b) backtracking ------------------------------------------------------------------------------

// Key order of a source row: weight descending, NaN first (torch's descending sort), ties by the
// lower key index.
template <class T>
FUQ_HD bool uqac_key_before(T wa, int64_t a, T wb, int64_t b) {
  const bool na = wa != wa, nb = wb != wb;
  if (na != nb) return na;
  if (!na && wa != wb) return wa > wb;
  return a < b;
}

// Chain storage and scratch of one sequence. Positions are absolute (instruction tokens first).
template <class T>
struct UqacSeq {
  // inputs
  const T* attn;          // [R, ld]: row i is the reduced attention of response token i (absolute I + i)
  int64_t ld;             // row stride of attn
  const uint8_t* is_stop; // [Ntok]
  const int64_t* ans;     // [A] answer sources, response coordinates
  int64_t R, Ntok, A;
  int buffer;
  T threshold;
  int64_t min_len;        // total minimum chain length (answer sources included)
  int64_t max_steps;
  // outputs, capacity cap: ids (response coordinates, ascending) and their scores
  int64_t* chain;
  T* scores;
  int64_t cap;
  // scratch: acc [Ntok] (all zero), seen [Ntok] (all zero), proc [Ntok + 1] (all zero), touched [Ntok]
  T* acc;
  uint8_t* seen;
  uint8_t* proc;          // proc[t]: absolute source t - 1 was expanded
  int32_t* touched;
  // state
  int64_t I, len, src0, src1;  // chain[0, len); the current round's sources are chain[src0, src1)
  int64_t step, ntouched, npos;

  // The row source s reads: the reference pads I zero rows on top and indexes with Python, so
  // s = -1 reads the last row. nullptr for a zero (instruction) row: adding zeros changes nothing
  // the reference can observe, so its scan is skipped.
  FUQ_HD const T* row(int64_t s) const {
    const int64_t rs = s < 0 ? s + Ntok : s;
    return rs >= I ? attn + (rs - I) * ld : nullptr;
  }

  // Starts the chain; false if the arguments are out of range (no output written) .
  FUQ_HD bool begin() {
    I = Ntok - R;
    len = 0;
    if (R < 0 || I < 0 || A < 0 || A > cap) return false;
    for (int64_t i = 0; i < A; ++i) {
      const int64_t s = ans[i] + I;
      if (s < -1 || s >= Ntok) return false;  // proc[s + 1] must exist
      chain[len] = s;
      scores[len] = T(0);
      ++len;
    }
    src0 = 0;
    src1 = len;
    step = 0;
    return true;
  }

  // Whether a round runs now; if so, marks its sources processed and clears the accumulator.
  FUQ_HD bool begin_round() {
    if (src0 == src1 || step >= max_steps) return false;
    for (int64_t i = src0; i < src1; ++i) proc[chain[i] + 1] = 1;
    ntouched = 0;
    npos = 0;
    return true;
  }

  // Source k of the round (absolute).
  FUQ_HD int64_t source(int64_t k) const { return chain[src0 + k]; }

  // The reference's key scan of source s; ranker.key(rank) is the rank-th key of row s in
  // uqac_key_before order (asked for rank 0, 1, 2, ... only as far as needed); row(s) is not null.
  template <class Ranker>
  FUQ_HD void scan(int64_t s, Ranker& ranker) {
    const T* w = row(s);
    for (int64_t rank = 0; rank < Ntok; ++rank) {
      if (rank >= 5 && (npos > 0 || len >= min_len)) break;
      const int64_t t = ranker.key(rank);
      if (t == s || proc[t] || is_stop[t]) continue;
      const T old = acc[t];
      const T now = old + w[t];
      acc[t] = now;
      npos += int64_t(now > T(0)) - int64_t(old > T(0));
      if (!seen[t]) {
        seen[t] = 1;
        touched[ntouched++] = int32_t(t);
      }
    }
  }

  // Picks up to `buffer` keys by accumulated score (descending, ties lower index); false when the
  // chain is finished.
  FUQ_HD bool end_round() {
    const int64_t before = len;
    int picked = 0;
    while (picked < buffer && len < cap) {
      int64_t best = -1;  // the best positive key not yet picked
      for (int64_t i = 0; i < ntouched; ++i) {
        const int64_t t = touched[i];
        if (!(acc[t] > T(0)) || seen[t] == 2) continue;
        if (best < 0 || acc[t] > acc[best] || (acc[t] == acc[best] && t < best)) best = t;
      }
      if (best < 0) break;
      // the reference tests len(chain) + len(picked) with this round's picks already in the chain
      if (acc[best] < threshold && len + picked >= min_len) break;
      seen[best] = 2;
      chain[len] = best - 1;
      scores[len] = acc[best];
      ++len;
      ++picked;
    }
    for (int64_t i = 0; i < ntouched; ++i) {
      acc[touched[i]] = T(0);
      seen[touched[i]] = 0;
    }
    ++step;
    src0 = before;
    src1 = len;
    return picked > 0;
  }

  // Sorts the chain by id (heapsort; equal ids are repeated answer sources, identical entries) and
  // moves it to response coordinates.
  FUQ_HD void finish() {
    for (int64_t i = len / 2 - 1; i >= 0; --i) sift(i, len);
    for (int64_t m = len - 1; m > 0; --m) {
      swap(0, m);
      sift(0, m);
    }
    for (int64_t i = 0; i < len; ++i) chain[i] -= I;
  }

 private:
  FUQ_HD void swap(int64_t a, int64_t b) {
    const int64_t c = chain[a]; chain[a] = chain[b]; chain[b] = c;
    const T x = scores[a]; scores[a] = scores[b]; scores[b] = x;
  }
  FUQ_HD void sift(int64_t i, int64_t n) {
    for (;;) {
      const int64_t l = 2 * i + 1, r = l + 1;
      int64_t m = i;
      if (l < n && chain[l] > chain[m]) m = l;
      if (r < n && chain[r] > chain[m]) m = r;
      if (m == i) return;
      swap(i, m);
      i = m;
    }
  }
};

// A whole sequence with a team of one (the CPU driver): ranker.begin(row, n) prepares row s.
template <class T, class Ranker>
FUQ_HD bool uqac_backtrack_seq(UqacSeq<T>& q, Ranker& ranker) {
  if (!q.begin()) return false;
  while (q.begin_round()) {
    const int64_t n = q.src1 - q.src0;
    for (int64_t k = 0; k < n; ++k) {
      const int64_t s = q.source(k);
      const T* w = q.row(s);
      if (!w) continue;
      ranker.begin(w, q.Ntok);
      q.scan(s, ranker);
    }
    if (!q.end_round()) break;
  }
  q.finish();
  return true;
}

// ---- (c) similarity filter -------------------------------------------------------------------------

// Cosine as torch.cosine_similarity: x·y / (max(‖x‖, 1e-8) max(‖y‖, 1e-8)).
template <class T>
FUQ_HD T uqac_cosine(T dot, T nx2, T ny2) {
  T nx = std::sqrt(nx2), ny = std::sqrt(ny2);
  nx = nx > T(1e-8) ? nx : T(1e-8);
  ny = ny > T(1e-8) ? ny : T(1e-8);
  return dot / (nx * ny);
}

// keep the chain positions i in [0, nc) with sim[i] >= threshold (NaN never), the k best by sim
// descending (ties: the lower position): mark[i] = 1 for them; returns how many. The similarities
// are compared in fp32, as the reference (which casts them with .float()).
template <class F>  // F = float
FUQ_HD int64_t uqac_keep_topk(const F* sim, int64_t nc, int64_t k, F threshold, uint8_t* mark) {
  for (int64_t i = 0; i < nc; ++i) mark[i] = 0;
  int64_t kept = 0;
  while (kept < k) {
    int64_t best = -1;
    for (int64_t i = 0; i < nc; ++i) {
      if (mark[i] || !(sim[i] >= threshold)) continue;
      if (best < 0 || sim[i] > sim[best]) best = i;  // ascending scan: equal keeps the lower position
    }
    if (best < 0) break;
    mark[best] = 1;
    ++kept;
  }
  return kept;
}

}  // namespace FUQ_ISA_NS
}  // namespace flashuq

"""Every CUDA C++ kernel once on small inputs, for `compute-sanitizer --tool memcheck` (scripts/gpu.sh).

Small shapes keep the run to seconds under the sanitizer; tails and splits are still exercised
(V not a multiple of the block, ragged counts, K up to 64, ragged UQAC sequences). Prints "ok" and
exits 0 when every result is finite where it should be; the sanitizer's own report decides.
"""

from __future__ import annotations

import sys

import torch

import flashuq as fuq


def main() -> int:
    if not torch.cuda.is_available() or fuq._ext._cuda is None:
        print("memcheck: needs a CUDA device and the flashuq._cuda module", file=sys.stderr)
        return 2
    g = torch.Generator(device="cpu").manual_seed(0)
    # graph spectra: every op, ragged counts, K = 5 .. 64
    for K in (5, 20, 64):
        W = torch.rand(7, K, K, generator=g, dtype=torch.float64)
        W = (W + W.transpose(1, 2)) / 2
        mask = torch.arange(K)[None, :] < torch.tensor([K, K - 1, 1, K // 2, K, 2, K])[:, None]
        Wc, mc = W.cuda(), mask.cuda()
        fuq.sym_eig(Wc, sample_mask=mc, eigenvectors=True)
        fuq.laplacian_spectrum(Wc, sample_mask=mc)
        fuq.heat_kernel_entropy(Wc, sample_mask=mc)
    # UQAC backtracking + similarity filter (CUDA C++), ragged batch
    from flashuq.ops.uqac import uqac_chain_batched

    B, R, N, D = 3, 40, 70, 16
    a = torch.rand(B, R, N, generator=g)
    a = a / a.sum(-1, keepdim=True)
    ans = torch.tensor([[30, 31, 32], [10, 11, -5], [0, 1, 2]])
    out = uqac_chain_batched(a.cuda(), ans.cuda(), (torch.rand(B, N, generator=g) < 0.2).cuda(),
                             response_len=torch.tensor([40, 25, 3]).cuda(), n_tokens=torch.tensor([70, 60, 3]).cuda(),
                             ans_len=torch.tensor([3, 2, 2]).cuda(), h_last=torch.randn(B, R, D, generator=g).cuda())
    torch.cuda.synchronize()
    assert bool((out.lengths >= 0).all())
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())

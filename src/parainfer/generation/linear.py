"""Linear layers with weights prepacked for oneDNN, falling back to ``F.linear``.

On CPU, ``F.linear`` calls MKL sgemm, which re-reads the weight in its plain [out, in] layout
at every call. oneDNN can reorder a weight once into its blocked layout
(``torch.ops.mkldnn._reorder_linear_weight``) and then run ``_linear_pointwise`` on it; on the
2-core AMD EPYC we measured, per decode step of SmolLM2-135M (1 thread, fp32): 8 rows
28 -> 17 ms, 32 rows 84 -> 63 ms, and the 49152-row LM head at 32 rows 39 -> 20 ms. These are
the same kernels PyTorch's inductor uses for CPU linear layers. Results agree with F.linear to
fp32 rounding (different summation order), not bit for bit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def onednn_available(dtype: torch.dtype = torch.float32) -> bool:
    """True when this torch build has the oneDNN linear ops used here for ``dtype``.

    oneDNN's bf16 linear needs AVX-512 (BW, VL, DQ) or AVX-NE-CONVERT; on an AVX2-only CPU
    (``_is_mkldnn_bf16_supported()`` False) a bf16 weight stays with ``F.linear``.
    """
    ops = torch.ops.mkldnn
    available = (
        torch.backends.mkldnn.is_available()
        and hasattr(ops, "_reorder_linear_weight")
        and hasattr(ops, "_linear_pointwise")
    )
    if available and dtype == torch.bfloat16:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return available


class Linear:
    """y = x @ weight.T + bias, with the weight prepacked for oneDNN when ``pack`` is True.

    Args:
        weight: [out, in] dense weight (fp32 or bf16, contiguous).
        bias: [out] or None.
        pack: prepack for oneDNN (falls back to F.linear when oneDNN is unavailable).
        batch_hint: typical number of rows, a hint for oneDNN's layout choice.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, pack: bool, batch_hint: int = 32) -> None:
        self.out_features, self.in_features = weight.shape
        self.bias = bias
        self.packed = pack and onednn_available(weight.dtype)
        if self.packed:
            self.weight = torch.ops.mkldnn._reorder_linear_weight(weight, batch_hint)
        else:
            self.weight = weight

    #: 0: one GEMM over all rows. R > 0 (deterministic generation on a CPU whose GEMM picks
    #: kernels by row count: ``invariance.batch_invariance``): every GEMM runs on exactly R rows,
    #: the last chunk padded with zero rows, so a row's bits do not depend on how many rows the
    #: step has (measured on an AMX Xeon: plain calls differ between 1 and 64 rows, R-row chunks
    #: gave every row the same bits at any position and any row count).
    row_chunk: int = 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x [T, in] -> [T, out]."""
        r = self.row_chunk
        if r and x.shape[0] != r:
            n = x.shape[0]
            if n % r:
                x = torch.cat([x, x.new_zeros(r - n % r, x.shape[1])])
            return torch.cat([self._gemm(x[i:i + r]) for i in range(0, x.shape[0], r)])[:n]
        return self._gemm(x)

    def _gemm(self, x: torch.Tensor) -> torch.Tensor:
        if self.packed:
            return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")
        return F.linear(x, self.weight, self.bias)

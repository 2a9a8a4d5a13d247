"""Row blocking: a stride-1 convolution computes B neighbouring output rows at
once, as B·O channels, so that its matrix product has B·O rows instead of O.

Why: OpenBLAS multiplies a product with few rows at a fraction of its speed
(LeNet-5's first conv has O = 6 output channels, so 6 rows); a GPU does not
need it (docs/performance.md has the figures).

How (space-to-depth along H). The padded input's rows are dealt into B
phases, x′[c·B + s, p] = x[c, B·p + s]. The output rows y[o, B·p + r] are then
the channels o·B + r of a plain stride-1 conv of x′, with OH′ = ⌈OH/B⌉ rows and
the weight

    W′[o·B + r, c·B + s, a] = W[o, c, B·a + s − r]

of kh′ = ⌈(kh + B − 1)/B⌉ rows, zero where B·a + s − r is outside W. dl/dW
gathers back along the same taps, dl/dx along the same phases. Whole rows move,
so dealing costs about one copy of x and of y. A ``BlockedConvPlan`` says which
B a conv uses and where W's rows sit in W′; B = 1 is the plain conv.

The zero taps still read x′: its rows below the image must be zeros (no NaN
bytes), and an inf or NaN in x would make 0·inf = NaN where the plain conv has
a number, so ``choose_block`` leaves a non-finite input unblocked.
"""
from typing import NamedTuple

import numpy as np

from ..backend import module_name

# B is the smallest power of two with B·O >= BLOCK_ROWS, at most OH and
# MAX_BLOCK (W′ has B·kh′ rows for W's kh: a large B multiplies mostly zeros).
BLOCK_ROWS = {"numpy": 24, "cupy": None}
MAX_BLOCK = 8
# Only a product of at least BLOCK_MACS multiply-adds is blocked: below it the
# deal's Python work outweighs what the product gains (LeNet-5 on 1×28×28 at
# batch 2: the training step 13 % slower blocked; at batch 8 even).
BLOCK_MACS = 2 * 10**6


class BlockedConvPlan(NamedTuple):
    """The conv that Conv2d runs: B output rows per block; W′'s kernel (kh′, kw);
    OH′ = ⌈OH/B⌉, the rows of its output; and where W's rows sit in W′ (``taps``)."""
    block: int
    kernel: tuple
    out_rows: int
    taps: list


def plan(kernel, out_height, block):
    """The plan of the conv of a ``kernel`` (kh, kw) with ``out_height`` output rows, blocked by ``block``."""
    height, where = taps(kernel[0], block)
    return BlockedConvPlan(block, (height, kernel[1]), -(-out_height // block), where)


def choose_block(xp, x, out_channels, kernel, out_height, stride, padding):
    """B for this conv: 1 unless the conv is stride 1, on an array module that
    gains (``BLOCK_ROWS``), big enough (``BLOCK_MACS``) and its input finite."""
    (N, C, _, W), kh, kw = x.shape, kernel[0], kernel[1]
    macs = out_channels * C * kh * kw * N * out_height * (W + 2 * padding[1])
    rows, B = BLOCK_ROWS[module_name(xp)], 1
    if stride == (1, 1) and rows and macs >= BLOCK_MACS:
        while B * out_channels < rows and 2 * B <= min(out_height, MAX_BLOCK):
            B *= 2
    return B if B == 1 or bool(xp.isfinite(x).all()) else 1


def taps(kh, block):
    """Where W's rows sit in the blocked weight: (r, s, a, i) with
    W′[o·B + r, c·B + s, a] = W[o, c, i] for i = B·a + s − r (a a slice, i a
    slice with step B); W′'s other rows are zero. Returns (kh′, taps)."""
    height = -(-(kh + block - 1) // block)
    out = []
    for r in range(block):
        for s in range(block):
            a = [a for a in range(height) if 0 <= block * a + s - r < kh]
            if a:
                i0 = block * a[0] + s - r
                out.append((r, s, slice(a[0], a[-1] + 1), slice(i0, i0 + block * (len(a) - 1) + 1, block)))
    return height, out


def blocked_weight(xp, W, plan):
    """W′ as a matrix, (O·B, C·B·kh′·kw)."""
    O, C = W.shape[:2]
    Wb = xp.zeros((O, plan.block, C, plan.block) + plan.kernel, dtype=W.dtype)
    for r, s, a, i in plan.taps:
        Wb[:, r, :, s, a] = W[:, :, i]
    return Wb.reshape(O * plan.block, -1)


def weight_gradient(xp, gWm, W_shape, plan):
    """dl/dW from dl/dW′ (O·B, C·B·kh′·kw): W′ holds each row of W up to B
    times, so their gradients are added up."""
    O, C = W_shape[:2]
    gWb = gWm.reshape((O, plan.block, C, plan.block) + plan.kernel)
    gW = xp.zeros(W_shape, dtype=gWm.dtype)
    for r, s, a, i in plan.taps:
        gW[:, :, i] += gWb[:, r, :, s, a]
    return gW


def phases(size, pad, block):
    """Where the rows of an image go when dealt into ``block`` phases: (s, h, p)
    with h + pad = block·p + s, for the rows h (a slice with step B) of phase s
    and their places p (a slice). With pad = 0 it also puts a blocked output
    back in order: row p of channel o·B + r is row B·p + r of y's channel o."""
    out = []
    for s in range(block):
        h0 = (s - pad) % block
        if h0 < size:
            p0, n = (h0 + pad) // block, len(range(h0, size, block))
            out.append((s, slice(h0, None, block), slice(p0, p0 + n)))
    return out


def deal(xp, dealt, rows, pad, block):
    """dealt[:, s, :, p] = rows[:, :, h] for each phase: the rows (C, N, H, W)
    dealt into ``block`` phases, (C, B, N, H′, W), ``pad`` rows down."""
    for s, h, p in phases(rows.shape[2], pad, block):
        copy_rows(xp, dealt[:, s, :, p], rows[:, :, h])


def undeal(xp, rows, dealt, pad, block):
    """The reverse of ``deal``: rows[:, :, h] = dealt[:, s, :, p]."""
    for s, h, p in phases(rows.shape[2], pad, block):
        copy_rows(xp, rows[:, :, h], dealt[:, s, :, p])


def copy_rows(xp, dst, src):
    """dst[...] = src. NumPy copies short rows element by element; viewed as one
    opaque element each, a row is one memcpy (LeNet-5's rows of 28 floats: 40 %
    less time). That needs one dtype and contiguous rows; otherwise (an upstream
    gradient that is a broadcast view, CuPy, which has no such dtype) a plain copy."""
    if module_name(xp) != "numpy" or dst.dtype != src.dtype or \
            dst.strides[-1] != dst.itemsize or src.strides[-1] != src.itemsize:
        dst[...] = src
        return
    row = np.dtype((np.void, dst.shape[-1] * dst.itemsize))
    dst.view(row)[..., 0] = src.view(row)[..., 0]

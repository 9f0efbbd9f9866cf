"""Plain float64 reference maths shared by the CBAM, Triplet and BAM tests.

Written from the papers' equations with explicit loops and einsum, not with
``F.conv2d`` / ``F.batch_norm``, so that the tests check the modules against
an independent computation. Only the weights are taken from the modules.
"""
import torch


def conv2d_ref(x, weight, bias=None, dilation=1):
    """Stride-1 cross-correlation with zero 'same' padding,
    ``out[b, o, i, j] = sum_{c, u, v} w[o, c, u, v] x[b, c, i + d u - p,
    j + d v - p]`` with ``p = d (k - 1) / 2``."""
    b, c, h, w = x.shape
    k = weight.shape[-1]
    pad = dilation * (k - 1) // 2
    xp = x.new_zeros(b, c, h + 2 * pad, w + 2 * pad)
    xp[:, :, pad:pad + h, pad:pad + w] = x
    out = x.new_zeros(b, weight.shape[0], h, w)
    for u in range(k):
        for v in range(k):
            window = xp[:, :, u * dilation:u * dilation + h,
                        v * dilation:v * dilation + w]
            out += torch.einsum('bchw,oc->bohw', window, weight[:, :, u, v])
    if bias is not None:
        out += bias.view(1, -1, 1, 1)
    return out


def batch_norm_ref(x, bn, training):
    """BatchNorm over every dim but 1: batch statistics (biased variance)
    in training, running statistics in eval."""
    dims = [d for d in range(x.dim()) if d != 1]
    shape = [1, -1] + [1] * (x.dim() - 2)
    if training:
        mean = x.mean(dim=dims)
        var = ((x - mean.view(shape)) ** 2).mean(dim=dims)
    else:
        mean, var = bn.running_mean, bn.running_var
    return ((x - mean.view(shape)) / torch.sqrt(var.view(shape) + bn.eps)
            * bn.weight.view(shape) + bn.bias.view(shape))


def zpool_gate_ref(x, gate, training):
    """sigmoid(BN(conv_kxk([max over dim 1; mean over dim 1]))), the
    CBAM / Triplet spatial gate, on ``(B, N, P, Q)`` -> ``(B, 1, P, Q)``."""
    pooled = torch.stack([x.max(dim=1).values, x.mean(dim=1)], dim=1)
    return torch.sigmoid(
        batch_norm_ref(conv2d_ref(pooled, gate.conv.weight), gate.bn,
                       training))

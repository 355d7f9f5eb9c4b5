"""The Barlow Twins loss (Zbontar et al. 2021): make the two views' features agree, dimension by dimension,
and decorrelate the dimensions.

With z1, z2 (N x D) each standardised over the batch per dimension, C = z1ᵀ z2 / N is their
cross-correlation matrix and

    L = Σ_i (1 - C_ii)² + λ Σ_i Σ_{j≠i} C_ij²
"""

from __future__ import annotations

import torch


def cross_correlation(z1: torch.Tensor, z2: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """C (D x D): each dimension standardised over the batch (biased std, as BatchNorm without affine)."""
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"z1 and z2 must both be (batch, dim), got {tuple(z1.shape)} and {tuple(z2.shape)}")
    n = z1.shape[0]
    if n < 2:
        raise ValueError("the Barlow Twins loss needs a batch of at least 2 (it normalises over the batch)")
    a = (z1 - z1.mean(0)) / torch.sqrt(z1.var(0, unbiased=False) + eps)
    b = (z2 - z2.mean(0)) / torch.sqrt(z2.var(0, unbiased=False) + eps)
    return a.T @ b / n


def barlow_twins_loss(z1: torch.Tensor, z2: torch.Tensor, lambda_offdiag: float = 0.001) -> torch.Tensor:
    c = cross_correlation(z1, z2)
    diagonal = torch.diagonal(c)
    on = (1 - diagonal).pow(2).sum()
    off = c.pow(2).sum() - diagonal.pow(2).sum()
    return on + lambda_offdiag * off

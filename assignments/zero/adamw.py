"""AdamW on flat fp32 tensors: the update each rank applies to its own shard."""
from __future__ import annotations

import math

import torch


@torch.no_grad()
def adamw_(param: torch.Tensor, grad: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor, step: int,
           *, lr: float, beta1: float, beta2: float, eps: float, weight_decay: float) -> None:
    """One AdamW update, in place, exactly as torch.optim.AdamW computes it.

    param, grad, exp_avg, exp_avg_sq: fp32 [n] (a shard: every element is independent, which is
    why the optimizer can be partitioned at all). step counts from 1.

        param      <- param * (1 - lr * weight_decay)            (decoupled weight decay)
        exp_avg    <- beta1 * exp_avg + (1 - beta1) * grad
        exp_avg_sq <- beta2 * exp_avg_sq + (1 - beta2) * grad^2
        param      <- param - lr / (1 - beta1^step) * exp_avg / (sqrt(exp_avg_sq / (1 - beta2^step)) + eps)
    """
    raise NotImplementedError(
        "zero: adamw_ (zero/adamw.py): in-place ops (mul_, lerp_ or add_, addcmul_, addcdiv_); bias-correct both "
        "moments")

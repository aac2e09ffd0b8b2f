"""adamw_ against torch.optim.AdamW, on flat fp32 tensors over several steps."""
import pytest
import torch

from autograder.checks import assert_close
from autograder.remote.client import writable


@pytest.mark.points(2)
def test_adamw_matches_torch(zero, rng):
    """Five steps with fresh gradients and random hyperparameters: every tensor equals
    torch.optim.AdamW's to 1e-6 (fp32); bias correction and decoupled weight decay included."""
    n = 1013
    lr = float(torch.empty(1).uniform_(1e-3, 3e-2, generator=rng))
    b1 = float(torch.empty(1).uniform_(0.8, 0.95, generator=rng))
    b2 = float(torch.empty(1).uniform_(0.9, 0.999, generator=rng))
    wd = float(torch.empty(1).uniform_(0.05, 0.3, generator=rng))
    eps = 1e-6
    p0 = torch.randn(n, generator=rng)
    ref = torch.nn.Parameter(p0.clone())
    opt = torch.optim.AdamW([ref], lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd, foreach=False)
    param, m, v = writable(p0.clone(), torch.zeros(n), torch.zeros(n))  # updated in place; the gradient is not
    for step in range(1, 6):
        grad = torch.randn(n, generator=rng) * 10 ** float(torch.empty(1).uniform_(-4, 0, generator=rng))
        grad[:7] = 0  # parameters without gradient still decay
        ref.grad = grad.clone()
        opt.step()
        g = grad.clone()
        zero.adamw.adamw_(param, g, m, v, step, lr=lr, beta1=b1, beta2=b2, eps=eps, weight_decay=wd)
        assert torch.equal(g, grad), "adamw_ must not modify the gradient"
        st = opt.state[ref]
        what = f"step {step} (lr={lr:.3g}, betas=({b1:.3f}, {b2:.4f}), weight_decay={wd:.3g})"
        assert_close(m, st["exp_avg"], what=f"exp_avg after {what}", atol=1e-6, rtol=1e-5)
        assert_close(v, st["exp_avg_sq"], what=f"exp_avg_sq after {what}", atol=1e-6, rtol=1e-5)
        assert_close(param, ref.detach(), what=f"param after {what}", atol=1e-6, rtol=0)

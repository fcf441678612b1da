"""Optional post-hoc refit of the PAD head: ridge regression on the fine-tuned pooled features.

The jointly trained PAD head shares the encoder with the 28-label task, which dominates the loss.
A closed-form ridge head on the final encoder's pooled features (EmoBank train only) can fit the
PAD dimensions better. The choice is made per dimension on a seeded 10% slice of EmoBank *train*
(the joint head has seen that slice, so the comparison is biased towards keeping it); EmoBank dev
is never used for any decision.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from .calibrate import pearson
from .model import EmotionNet
from .tokenize import pad_batch

ALPHAS = (1.0, 10.0, 100.0, 1000.0)


@torch.no_grad()
def pooled_features(model: EmotionNet, seqs: list[list[int]], batch_size: int = 128) -> np.ndarray:
    """Mean-pooled encoder output [N, hidden] (eval mode, no dropout)."""
    model.eval()
    order = np.argsort([len(s) for s in seqs], kind="stable")
    out = np.zeros((len(seqs), int(model.encoder.config.hidden_size)), dtype=np.float32)
    for s in range(0, len(order), batch_size):
        sel = order[s : s + batch_size]
        ids, mask = pad_batch([seqs[i] for i in sel])
        h = model.encoder(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).last_hidden_state
        m = torch.from_numpy(mask).unsqueeze(-1).to(h.dtype)
        out[sel] = ((h * m).sum(1) / m.sum(1).clamp(min=1e-6)).numpy()
    return out


def _logit(y: np.ndarray) -> np.ndarray:
    y = np.clip(y, 0.02, 0.98)
    return np.log(y / (1 - y))


def ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Ridge weights W [d, k], bias b [k] (bias not penalised)."""
    mu, ym = x.mean(0), y.mean(0)
    xc = x - mu
    w = np.linalg.solve(xc.T @ xc + alpha * np.eye(x.shape[1]), xc.T @ (y - ym))
    return w, ym - mu @ w


class MixedPadHead(nn.Module):
    """PAD logits: ridge (linear) head for dimensions in ``use_ridge``, the old head otherwise."""

    mask: torch.Tensor

    def __init__(self, old: nn.Module, w: np.ndarray, b: np.ndarray, use_ridge: list[bool]):
        super().__init__()
        self.old = old
        self.lin = nn.Linear(w.shape[0], w.shape[1])
        with torch.no_grad():
            self.lin.weight.copy_(torch.from_numpy(w.T.astype(np.float32)))
            self.lin.bias.copy_(torch.from_numpy(b.astype(np.float32)))
        self.register_buffer("mask", torch.tensor(use_ridge, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mask * self.lin(x) + (1 - self.mask) * self.old(x)


def refit_pad_head(
    model: EmotionNet,
    train_seqs: list[list[int]],
    vad: np.ndarray,
    seed: int = 13,
    log: Callable[[str], None] = print,
) -> dict:
    """Fit ridge PAD heads, choose per dimension, install the mixed head in ``model``."""
    x = pooled_features(model, train_seqs)
    y = _logit(vad)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(x))
    n_hold = max(2, len(x) // 10)
    hold, fit = perm[:n_hold], perm[n_hold:]
    # alpha per dimension by 5-fold CV inside the fit part
    folds = np.array_split(fit, 5)
    best_alpha = []
    for k in range(3):
        scores = []
        for a in ALPHAS:
            rs = []
            for f in folds:
                tr = np.setdiff1d(fit, f)
                w, b = ridge(x[tr], y[tr, k : k + 1], a)
                rs.append(pearson((x[f] @ w + b)[:, 0], vad[f, k]))
            scores.append(float(np.mean(rs)))
        best_alpha.append(ALPHAS[int(np.argmax(scores))])
    # compare on the held-out slice of train
    with torch.no_grad():
        old_pred = torch.sigmoid(model.pad_head(torch.from_numpy(x[hold]))).numpy()
    ws, bs, use, report = [], [], [], {}
    for k, name in enumerate(("valence", "arousal", "dominance")):
        w, b = ridge(x[fit], y[fit, k : k + 1], best_alpha[k])
        r_ridge = pearson((x[hold] @ w + b)[:, 0], vad[hold, k])
        r_old = pearson(old_pred[:, k], vad[hold, k])
        use.append(bool(r_ridge > r_old))
        w, b = ridge(x, y[:, k : k + 1], best_alpha[k])  # refit on all of train
        ws.append(w)
        bs.append(b)
        report[name] = {
            "alpha": best_alpha[k],
            "r_ridge_train_holdout": r_ridge,
            "r_joint_head_train_holdout": r_old,
            "use_ridge": use[-1],
        }
    model.pad_head = MixedPadHead(model.pad_head, np.hstack(ws), np.concatenate(bs), use)
    log(f"PAD head refit: {report}")
    return report

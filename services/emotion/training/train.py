"""Multi-task fine-tuning loop (GoEmotions BCE + EmoBank PAD regression, masked losses)."""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .calibrate import calibrate, evaluate_emotions, evaluate_pad
from .data import Corpus, dev_half_masks
from .model import EmotionNet, encoder_path
from .tokenize import encode, load_tokenizer, pad_batch


@dataclass
class TrainConfig:
    """Hyper-parameters (all recorded in the checkpoint and the model card)."""

    epochs: int = 3
    batch_size: int = 32
    lr: float = 8e-5
    head_lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_frac: float = 0.06
    max_seq_length: int = 64
    pos_weight_power: float = 0.5  # pos_weight = (neg/pos) ** power ...
    pos_weight_max: float = 10.0  # ... clipped to [1, max]
    pad_loss_weight: float = 0.5  # weight of the variance-normalised PAD MSE
    emobank_repeat: int = 1  # EmoBank train copies per epoch
    dropout: float = 0.1
    seed: int = 13
    threads: int = 2
    max_steps: int | None = None  # stop early (timing / smoke tests)
    time_budget_min: float | None = None  # shrink the LR schedule to finish within this time
    eval_batch_size: int = 128
    layers: int | None = None  # keep the base encoder's first N transformer layers (None: all 6)
    teacher: str | None = None  # model folder to distil from (distill.py); None: labels only
    kd_weight: float = 0.5  # loss = (1 - w) * labelled + w * distillation
    kd_temperature: float = 1.0
    kd_embedding_weight: float = 0.5  # weight of 1 - cos(student, teacher pooled) in the distillation part


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pos_weights(y: np.ndarray, power: float, cap: float) -> np.ndarray:
    """Per-label BCE pos_weight: (neg/pos) ** power clipped to [1, cap]."""
    pos = y.sum(0)
    neg = len(y) - pos
    w = np.power(neg / np.maximum(pos, 1.0), power)
    return np.clip(w, 1.0, cap).astype(np.float32)


def length_grouped_batches(lengths: list[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffle, sort by length inside chunks of 50 batches, shuffle the batches."""
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    chunk = batch_size * 50
    batches: list[list[int]] = []
    for s in range(0, len(idx), chunk):
        part = sorted(idx[s : s + chunk], key=lambda i: lengths[i])
        batches.extend(part[b : b + batch_size] for b in range(0, len(part), batch_size))
    rng.shuffle(batches)
    return batches


@torch.no_grad()
def predict_torch(model: EmotionNet, seqs: list[list[int]], batch_size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Logits [N,28] and PAD [N,3] of token-id sequences (sorted by length for speed)."""
    model.eval()
    order = np.argsort([len(s) for s in seqs], kind="stable")
    logits = np.zeros((len(seqs), 28), dtype=np.float32)
    pad = np.zeros((len(seqs), 3), dtype=np.float32)
    for s in range(0, len(order), batch_size):
        sel = order[s : s + batch_size]
        ids, mask = pad_batch([seqs[i] for i in sel])
        lo, pa = model(torch.from_numpy(ids), torch.from_numpy(mask))
        logits[sel] = lo.numpy()
        pad[sel] = pa.numpy()
    return logits, pad


def evaluate_dev(model: EmotionNet, corpus: Corpus, dev_seqs: list[list[int]], eb_seqs: list[list[int]]) -> dict:
    """Calibrate on dev half A; metrics on A, B, full dev and EmoBank dev."""
    logits, _ = predict_torch(model, dev_seqs)
    _, pad = predict_torch(model, eb_seqs)
    y = corpus.ge_dev.labels
    a, b = dev_half_masks(corpus.ge_dev.ids)
    cal = calibrate(logits[a], y[a], corpus.ekman_of_label)
    res = {"calibration": cal, "pad_dev": evaluate_pad(pad, corpus.eb_dev.vad)}
    for name, m in (("dev_A", a), ("dev_B", b), ("dev_full", np.ones_like(a))):
        r = evaluate_emotions(logits[m], y[m], cal, corpus.ekman_of_label)
        res[name] = {k: v for k, v in r.items() if not k.startswith("per_")}
    return res


def train(corpus: Corpus, cfg: TrainConfig, build_dir: Path, log=print) -> dict:
    """Fine-tune; save ``checkpoints/epoch{k}.pt`` each epoch and ``best.pt`` (by dev-A macro-F1)."""
    torch.set_num_threads(cfg.threads)
    set_seed(cfg.seed)
    ckpt_dir = build_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    tok = load_tokenizer(encoder_path() / "tokenizer.json", cfg.max_seq_length)

    ge_seqs = encode(tok, corpus.ge_train.texts)
    eb_seqs = encode(tok, corpus.eb_train.texts)
    dev_seqs = encode(tok, corpus.ge_dev.texts)
    ebdev_seqs = encode(tok, corpus.eb_dev.texts)

    # one pool of examples; each has either emotion labels or PAD targets
    seqs = ge_seqs + eb_seqs * cfg.emobank_repeat
    n_ge = len(ge_seqs)
    ge_y = torch.from_numpy(corpus.ge_train.labels)
    eb_vad = torch.from_numpy(corpus.eb_train.vad)
    n_eb = len(eb_seqs)
    vad_var = torch.from_numpy(corpus.eb_train.vad.var(0).astype(np.float32)).clamp(min=1e-4)

    model = EmotionNet(dropout=cfg.dropout, layers=cfg.layers)
    pw = torch.from_numpy(pos_weights(corpus.ge_train.labels, cfg.pos_weight_power, cfg.pos_weight_max))
    bce = nn.BCEWithLogitsLoss(pos_weight=pw)
    kd = None
    if cfg.teacher:
        from .distill import teacher_targets

        tt = time.time()
        targets = teacher_targets(Path(cfg.teacher), ge_seqs + eb_seqs, np.log(pw.numpy()), cfg.threads)
        kd = tuple(torch.from_numpy(a) for a in (targets.logits, targets.pad, targets.pooled))
        log(f"teacher {targets.model_version} ({cfg.teacher}): {len(ge_seqs) + n_eb} texts in {time.time() - tt:.0f}s")

    no_decay = ("bias", "LayerNorm.weight", "layer_norm", "norm.weight")
    groups = []
    for is_enc, lr in ((True, cfg.lr), (False, cfg.head_lr)):
        for decay in (True, False):
            ps = [
                p
                for n, p in model.named_parameters()
                if n.startswith("encoder.") == is_enc and (not any(k in n for k in no_decay)) == decay
            ]
            if ps:
                groups.append({"params": ps, "lr": lr, "weight_decay": cfg.weight_decay if decay else 0.0})
    opt = torch.optim.AdamW(groups)
    steps_per_epoch = math.ceil(len(seqs) / cfg.batch_size)
    total = steps_per_epoch * cfg.epochs
    if cfg.max_steps:
        total = min(total, cfg.max_steps)
    warm = max(1, int(cfg.warmup_frac * total))
    plan = {"total": total}  # may shrink under a time budget (shared, busy CPU)

    def lr_lambda(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (plan["total"] - step) / max(1, plan["total"] - warm))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)
    rng = random.Random(cfg.seed)
    lengths = [len(s) for s in seqs]
    log(
        f"train: {n_ge} goemotions + {n_eb}x{cfg.emobank_repeat} emobank, "
        f"{steps_per_epoch} steps/epoch, {total} steps total, pos_weight={pw.numpy().round(2).tolist()}"
    )
    t0 = time.time()
    eval_s = 0.0
    step = 0
    history: list[dict] = []
    best = (-1.0, -1)
    stop = False
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        run_loss = run_ge = run_eb = run_kd = 0.0
        for batch in length_grouped_batches(lengths, cfg.batch_size, rng):
            ids, mask = pad_batch([seqs[i] for i in batch])
            logits, pad, pooled = model.forward_pooled(torch.from_numpy(ids), torch.from_numpy(mask))
            bi = torch.tensor(batch)
            is_ge = bi < n_ge
            loss = torch.zeros(())
            lge = leb = torch.zeros(())
            if is_ge.any():
                lge = bce(logits[is_ge], ge_y[bi[is_ge]])
                loss = loss + lge
            if (~is_ge).any():
                tgt = eb_vad[(bi[~is_ge] - n_ge) % n_eb]
                leb = (((pad[~is_ge] - tgt) ** 2) / vad_var).mean()
                loss = loss + cfg.pad_loss_weight * leb
            lkd = torch.zeros(())
            if kd is not None:
                from .distill import distill_loss_terms

                ti = torch.where(is_ge, bi, n_ge + (bi - n_ge) % n_eb)  # EmoBank repeats share targets
                k_emo, k_pad, k_emb = distill_loss_terms(
                    logits, pad, pooled, kd[0][ti], kd[1][ti], kd[2][ti], vad_var, cfg.kd_temperature
                )
                lkd = k_emo + cfg.pad_loss_weight * k_pad + cfg.kd_embedding_weight * k_emb
                loss = (1.0 - cfg.kd_weight) * loss + cfg.kd_weight * lkd
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            step += 1
            run_loss += float(loss.detach())
            run_ge += float(lge.detach())
            run_eb += float(leb.detach())
            run_kd += float(lkd.detach())
            if step % 50 == 0:
                el = time.time() - t0
                log(
                    f"epoch {epoch} step {step}/{total} loss {run_loss / 50:.4f} "
                    f"(ge {run_ge / 50:.4f} pad {run_eb / 50:.4f} kd {run_kd / 50:.4f}) "
                    f"lr {sched.get_last_lr()[0]:.2e} {el / step:.3f}s/step elapsed {el / 60:.1f}min"
                )
                run_loss = run_ge = run_eb = run_kd = 0.0
                if cfg.time_budget_min:
                    rate = (el - eval_s) / step
                    left = cfg.time_budget_min * 60 - el - 90.0 * (cfg.epochs - epoch + 1)
                    plan["total"] = int(min(total, max(step + 1, step + left / rate)))
                    log(f"time budget: planned total steps {plan['total']}")
            if step >= plan["total"]:
                stop = True
                break
        te = time.time()
        ev = evaluate_dev(model, corpus, dev_seqs, ebdev_seqs)
        eval_s += time.time() - te
        ev.update({"epoch": epoch, "step": step, "elapsed_s": time.time() - t0})
        history.append(ev)
        log("epoch-eval " + json.dumps({k: ev[k] for k in ("epoch", "dev_A", "pad_dev", "elapsed_s")}))
        torch.save(
            {"state_dict": model.state_dict(), "config": asdict(cfg), "epoch": epoch, "step": step, "eval": ev},
            ckpt_dir / f"epoch{epoch}.pt",
        )
        if ev["dev_A"]["macro_f1"] > best[0]:
            best = (ev["dev_A"]["macro_f1"], epoch)
        if stop:
            break
    wall = time.time() - t0
    best_path = ckpt_dir / f"epoch{best[1]}.pt"
    (build_dir / "best.pt").unlink(missing_ok=True)
    (build_dir / "best.pt").symlink_to(best_path.resolve())
    summary = {
        "config": asdict(cfg),
        "history": history,
        "best_epoch": best[1],
        "planned_total_steps": plan["total"],
        "stopped_early": stop,
        "train_wall_s": wall,
        "steps": step,
        "steps_per_epoch": steps_per_epoch,
        "n_train_goemotions": n_ge,
        "n_train_emobank": n_eb,
        "hardware": hardware(),
        "torch": torch.__version__,
    }
    (build_dir / "train_summary.json").write_text(json.dumps(summary, indent=1))
    log(f"training done in {wall / 60:.1f} min; best epoch {best[1]} (dev-A macro-F1 {best[0]:.4f})")
    if len(history) >= 2:
        summary = add_checkpoint_average(corpus, build_dir, log)
    return summary


def add_checkpoint_average(corpus: Corpus, build_dir: Path, log=print) -> dict:
    """Average the weights of the last two epoch checkpoints; it becomes ``best.pt`` if it has
    the best dev-A macro-F1 of all candidates. Updates ``train_summary.json``."""
    summary = json.loads((build_dir / "train_summary.json").read_text())
    epochs = [h["epoch"] for h in summary["history"] if isinstance(h["epoch"], int)]
    e1, e2 = epochs[-2], epochs[-1]
    ckpt_dir = build_dir / "checkpoints"
    c1 = torch.load(ckpt_dir / f"epoch{e1}.pt", weights_only=False)
    c2 = torch.load(ckpt_dir / f"epoch{e2}.pt", weights_only=False)
    sd = {k: (c1["state_dict"][k] + v) / 2 if v.is_floating_point() else v for k, v in c2["state_dict"].items()}
    cfg = c2["config"]
    model = EmotionNet(dropout=cfg["dropout"], layers=cfg.get("layers"))
    model.load_state_dict(sd)
    tok = load_tokenizer(encoder_path() / "tokenizer.json", cfg["max_seq_length"])
    ev = evaluate_dev(model, corpus, encode(tok, corpus.ge_dev.texts), encode(tok, corpus.eb_dev.texts))
    name = f"avg({e1},{e2})"
    ev.update({"epoch": name, "step": c2["step"], "elapsed_s": summary["train_wall_s"]})
    log("epoch-eval " + json.dumps({k: ev[k] for k in ("epoch", "dev_A", "pad_dev")}))
    path = ckpt_dir / f"avg{e1}{e2}.pt"
    torch.save({"state_dict": sd, "config": cfg, "epoch": name, "step": c2["step"], "eval": ev}, path)
    summary["history"].append(ev)
    best = max(summary["history"], key=lambda h: h["dev_A"]["macro_f1"])
    summary["best_epoch"] = best["epoch"]
    target = path if best["epoch"] == name else ckpt_dir / f"epoch{best['epoch']}.pt"
    (build_dir / "best.pt").unlink(missing_ok=True)
    (build_dir / "best.pt").symlink_to(target.resolve())
    (build_dir / "train_summary.json").write_text(json.dumps(summary, indent=1))
    log(f"checkpoint chosen on dev-A macro-F1: {best['epoch']} ({best['dev_A']['macro_f1']:.4f})")
    return summary


def hardware() -> str:
    import os

    from masterx_runtime.testing.benchstats import cpu_model

    return f"{cpu_model()}, {os.cpu_count()} logical CPUs, no GPU"

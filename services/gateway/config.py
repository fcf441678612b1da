"""Gateway settings: where it listens, security limits and per-stage deadlines."""

from __future__ import annotations

from masterx_runtime.config import env, settings


@settings("gateway")
class GatewaySettings:
    """Everything the HTTP gateway reads from the environment."""

    host: str = env("GATEWAY_HOST", "127.0.0.1", "Address the HTTP gateway binds to (`0.0.0.0` in containers).")
    port: int = env("GATEWAY_PORT", 8080, "HTTP port of the gateway.", minimum=0, maximum=65535)
    admin_api_keys: tuple[str, ...] = env(
        "GATEWAY_ADMIN_API_KEYS",
        (),
        "Comma-separated API keys accepted on admin endpoints (`Authorization: Bearer KEY` or `X-API-Key`). "
        "Empty = admin endpoints answer 403.",
        secret=True,
    )
    max_body_bytes: int = env(
        "GATEWAY_MAX_BODY_BYTES", 256 * 1024, "Largest request body accepted; larger ones get 413.", minimum=1
    )
    max_message_chars: int = env(
        "GATEWAY_MAX_MESSAGE_CHARS", 16_000, "Longest chat message accepted (characters).", minimum=1
    )
    max_history_messages: int = env(
        "GATEWAY_MAX_HISTORY_MESSAGES", 50, "Most earlier messages a chat request may carry.", minimum=0
    )
    rate_limit_per_minute: int = env(
        "GATEWAY_RATE_LIMIT_PER_MINUTE",
        120,
        "Requests per minute per client on /api and /v1 (token bucket in Redis; 0 = no limit).",
        minimum=0,
    )
    rate_limit_burst: int = env(
        "GATEWAY_RATE_LIMIT_BURST", 0, "Bucket size: requests allowed at once (0 = the per-minute rate).", minimum=0
    )
    rate_limit_fail_open: bool = env(
        "GATEWAY_RATE_LIMIT_FAIL_OPEN", True, "When Redis is unreachable, let requests through (logged) instead of 503."
    )
    trusted_proxies: tuple[str, ...] = env(
        "GATEWAY_TRUSTED_PROXIES",
        (),
        "Comma-separated addresses or CIDR ranges of proxies in front of the gateway. Empty = clients are "
        "identified by the connection's peer address and X-Forwarded-For is ignored; set = when the peer is one "
        "of them, the client is the last X-Forwarded-For hop that is not.",
    )
    auth_mode: str = env(
        "GATEWAY_AUTH_MODE",
        "off",
        "End-user authentication on /api and /v1: `off` (local runs: user ids are taken as given) or `jwt` (a "
        "signed bearer token is required; its `sub` is the student; on in the Kubernetes prod overlay).",
        choices=("off", "jwt"),
    )
    jwt_hs256_secret: str = env(
        "GATEWAY_JWT_HS256_SECRET", "", "Shared secret for HS256 tokens (at least 32 bytes).", secret=True
    )
    jwt_public_key_file: str = env(
        "GATEWAY_JWT_PUBLIC_KEY_FILE", "", "PEM public key file for RS256 tokens (one issuer key)."
    )
    jwt_jwks_file: str = env(
        "GATEWAY_JWT_JWKS_FILE", "", "JWKS file (JSON) with the RS256 public keys, chosen by the token's `kid`."
    )
    jwt_issuer: str = env("GATEWAY_JWT_ISSUER", "", "Required `iss` of tokens (required with GATEWAY_AUTH_MODE=jwt).")
    jwt_audience: str = env(
        "GATEWAY_JWT_AUDIENCE", "", "Required `aud` of tokens (required with GATEWAY_AUTH_MODE=jwt)."
    )
    jwt_leeway_seconds: float = env(
        "GATEWAY_JWT_LEEWAY_SECONDS", 30.0, "Clock skew allowed on `exp`/`nbf`/`iat`.", minimum=0, maximum=600
    )
    jwt_role_claim: str = env(
        "GATEWAY_JWT_ROLE_CLAIM", "role", "Claim naming the role: `student` (default) or `teacher`."
    )
    jwt_students_claim: str = env(
        "GATEWAY_JWT_STUDENTS_CLAIM", "students", "Teacher tokens: claim listing the student ids the teacher may read."
    )
    jwt_groups_claim: str = env(
        "GATEWAY_JWT_GROUPS_CLAIM", "groups", "Teacher tokens: claim listing groups (classes) the teacher may read."
    )
    auth_groups_file: str = env(
        "GATEWAY_AUTH_GROUPS_FILE",
        "",
        'JSON file mapping a group to its student ids (`{"class-7b": ["s-1", "s-2"]}`) for the groups claim.',
    )
    cors_origins: tuple[str, ...] = env(
        "GATEWAY_CORS_ORIGINS", (), "Comma-separated origins allowed by CORS (`*` = any; empty = no CORS headers)."
    )
    log_message_text: bool = env(
        "GATEWAY_LOG_MESSAGE_TEXT", False, "Log students' message text (off: only length and a hash are logged)."
    )
    emotion_timeout_seconds: float = env(
        "GATEWAY_EMOTION_TIMEOUT_SECONDS", 3.0, "Deadline of the emotion Analyze call in a chat turn.", minimum=0.01
    )
    budget_timeout_seconds: float = env(
        "GATEWAY_BUDGET_TIMEOUT_SECONDS", 2.0, "Deadline of the reasoning AllocateBudget call.", minimum=0.01
    )
    generate_timeout_seconds: float = env(
        "GATEWAY_GENERATE_TIMEOUT_SECONDS", 120.0, "Deadline of the router Generate call (the answer).", minimum=0.01
    )
    reason_timeout_seconds: float = env(
        "GATEWAY_REASON_TIMEOUT_SECONDS", 120.0, "Deadline of an MCTS Reason call (deep thinking).", minimum=0.01
    )
    rpc_timeout_seconds: float = env(
        "GATEWAY_RPC_TIMEOUT_SECONDS",
        10.0,
        "Deadline of the other calls (leaderboards, provider health, costs, practice).",
        minimum=0.01,
    )
    ready_timeout_seconds: float = env(
        "GATEWAY_READY_TIMEOUT_SECONDS", 1.0, "Deadline of each health check behind /readyz.", minimum=0.01
    )
    ready_requires: tuple[str, ...] = env(
        "GATEWAY_READY_REQUIRES",
        ("router",),
        "Services /readyz needs SERVING (comma-separated); chat works with only the router, so the "
        "others (emotion, reasoning, benchmark) and Redis are reported as degraded, not required.",
    )
    system_prompt: str = env(
        "GATEWAY_SYSTEM_PROMPT",
        "You are MasterX, a patient tutor. Explain step by step, check understanding, and keep answers focused.",
        "System prompt the tutor chat (/api/v1/chat) puts before the conversation.",
    )
    openai_emotion: bool = env(
        "GATEWAY_OPENAI_EMOTION",
        True,
        "Have the router analyse the last user message on /v1/chat/completions (analyze_emotion), so routing is "
        "emotion-aware and the answer carries `masterx.emotion`; the router starts the provider call meanwhile.",
    )
    shutdown_grace_seconds: float = env(
        "GATEWAY_SHUTDOWN_GRACE_SECONDS",
        10.0,
        "On SIGTERM, open requests (streams too) get this long before they are cancelled.",
        minimum=0,
    )
    ops_sample_seconds: float = env(
        "GATEWAY_OPS_SAMPLE_SECONDS",
        5.0,
        "Ops page: how often the gateway samples every provider's breaker state and failure rate (0 = no sampler).",
        minimum=0,
    )
    ops_history_samples: int = env(
        "GATEWAY_OPS_HISTORY_SAMPLES", 720, "Ops page: breaker samples kept per provider (in memory).", minimum=1
    )
    ops_recent_decisions: int = env(
        "GATEWAY_OPS_RECENT_DECISIONS", 50, "Ops page: routing decisions of chat turns kept (in memory).", minimum=1
    )
    ops_cost_days: int = env(
        "GATEWAY_OPS_COST_DAYS", 14, "Ops page: UTC days of spend in the chart.", minimum=1, maximum=366
    )

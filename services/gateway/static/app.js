// MasterX tutor page: streams /api/v1/chat/stream (fetch + ReadableStream), shows the emotion
// and learning state as they change (own SVG chart), the provider chosen and why, and MCTS
// reasoning steps when deep thinking is on. No framework, no build step, no external assets.
"use strict";

const STATE_COLORS = {
  confused: "#f08c00", frustrated: "#e03131", anxious: "#c2255c", bored: "#868e96",
  engaged: "#2f9e44", confident: "#1971c2", neutral: "#adb5bd", unspecified: "#ced4da",
};
const MAX_HISTORY = 20;

const $ = (id) => document.getElementById(id);
const els = {
  messages: $("messages"), form: $("composer"), input: $("input"), send: $("send"), deep: $("deep"),
  reset: $("reset"), status: $("status"), primary: $("emotion-primary"), state: $("learning-state"),
  intervention: $("intervention"), padBars: $("pad-bars"), chart: $("chart"), states: $("states"),
  providerName: $("provider-name"), providerModel: $("provider-model"), providerCategory: $("provider-category"),
  reasons: $("provider-reasons"), usage: $("usage"), degraded: $("degraded"), reasoningCard: $("reasoning-card"),
  steps: $("reasoning-steps"), reasoningSummary: $("reasoning-summary"), hint: $("hint"),
  urgency: $("urgency"), urgencyFill: $("urgency-fill"), ekman: $("ekman"),
};

const state = {
  userId: localStorage.getItem("masterx.user") || `student-${Math.random().toString(36).slice(2, 10)}`,
  sessionId: newSessionId(),
  history: [],       // [{role, content}] sent back each turn (the gateway is stateless)
  timeline: [],      // [{pad, learning_state}] one point per analysed message
  busy: false,
};
localStorage.setItem("masterx.user", state.userId);

function newSessionId() {
  return `sess-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 7)}`;
}

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

function scrollDown() { els.messages.scrollTop = els.messages.scrollHeight; }

function addMessage(role, text) {
  if (els.hint) { els.hint.remove(); els.hint = null; }
  const node = el("div", `msg ${role}`, text);
  els.messages.appendChild(node);
  scrollDown();
  return node;
}

// ---- Server-Sent Events over fetch -------------------------------------------------------

async function* sseEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let name = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
      }
      if (data.length) yield { name, data: JSON.parse(data.join("\n")) };
    }
  }
}

function errorText(body, status) {
  const err = body && body.error;
  if (!err) return `request failed (${status})`;
  return `${err.message}${err.service ? ` [${err.service}]` : ""}`;
}

// ---- Rendering ---------------------------------------------------------------------------

function renderEmotion(emotion) {
  els.primary.textContent = emotion.primary || "—";
  els.state.textContent = emotion.learning_state;
  els.state.style.background = STATE_COLORS[emotion.learning_state] || STATE_COLORS.neutral;
  els.state.style.color = "#fff";
  const iv = emotion.intervention || {};
  els.intervention.textContent = iv.level ? `${iv.level}${iv.reasons && iv.reasons.length ? `: ${iv.reasons[0]}` : ""}` : "—";
  renderUrgency(emotion.urgency);
  renderEkman(emotion.ekman || {});
  els.padBars.replaceChildren(
    ...["pleasure", "arousal", "dominance"].map((k, i) => {
      const row = el("div", "pad-bar");
      const track = el("div", "track");
      const fill = el("div", "fill");
      fill.style.width = `${Math.round(emotion.pad[k] * 100)}%`;
      fill.style.background = ["var(--p)", "var(--a)", "var(--d)"][i];
      track.appendChild(fill);
      row.append(el("span", "", k), track, el("span", "muted", emotion.pad[k].toFixed(2)));
      return row;
    }),
  );
  state.timeline.push({ pad: emotion.pad, learning_state: emotion.learning_state });
  drawChart();
  const chip = el("span", "state-chip", emotion.learning_state);
  chip.style.background = STATE_COLORS[emotion.learning_state] || STATE_COLORS.neutral;
  els.states.appendChild(chip);
}

function drawChart() {
  const svg = els.chart;
  const NS = "http://www.w3.org/2000/svg";
  const W = 320, H = 150, L = 28, R = 10, T = 10, B = 22;
  const pts = state.timeline;
  const x = (i) => (pts.length <= 1 ? L + (W - L - R) / 2 : L + (i * (W - L - R)) / (pts.length - 1));
  const y = (v) => T + (1 - v) * (H - T - B);
  const node = (tag, attrs, text) => {
    const n = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
    if (text !== undefined) n.textContent = text;
    return n;
  };
  const parts = [];
  for (const v of [0, 0.5, 1]) {
    parts.push(node("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: "#e3e6ee" }));
    parts.push(node("text", { x: 4, y: y(v) + 4, "font-size": 10, fill: "#6b7280" }, v.toFixed(1)));
  }
  if (pts.length === 0) {
    parts.push(node("text", { x: W / 2, y: H / 2, "text-anchor": "middle", "font-size": 12, fill: "#6b7280" }, "no messages yet"));
  }
  const series = [["pleasure", "#2f9e44"], ["arousal", "#e8590c"], ["dominance", "#7048e8"]];
  for (const [key, color] of series) {
    if (pts.length > 1) {
      const d = pts.map((p, i) => `${i ? "L" : "M"}${x(i).toFixed(1)},${y(p.pad[key]).toFixed(1)}`).join(" ");
      parts.push(node("path", { d, fill: "none", stroke: color, "stroke-width": 2, "data-series": key }));
    }
  }
  pts.forEach((p, i) => {
    parts.push(node("circle", {
      cx: x(i), cy: y(p.pad.pleasure), r: 5, fill: STATE_COLORS[p.learning_state] || STATE_COLORS.neutral,
      stroke: "#fff", "stroke-width": 1.5, class: "point",
    }, undefined));
    parts.at(-1).appendChild(node("title", {}, `message ${i + 1}: ${p.learning_state}, pleasure ${p.pad.pleasure.toFixed(2)}`));
    parts.push(node("text", { x: x(i), y: H - 6, "text-anchor": "middle", "font-size": 10, fill: "#6b7280" }, String(i + 1)));
  });
  svg.replaceChildren(...parts);
}

function renderUrgency(u) {
  if (!u) { els.urgency.textContent = "—"; els.urgencyFill.style.width = "0"; return; }
  els.urgency.textContent = `${Math.round(u.probability * 100)}% · ${u.score.toFixed(1)}/7`;
  els.urgencyFill.style.width = `${Math.round(u.probability * 100)}%`;
}

function renderEkman(ekman) {
  const active = new Set(ekman.active || []);
  const probs = ekman.probabilities || {};
  els.ekman.replaceChildren(
    ...Object.entries(probs)
      .sort((a, b) => b[1] - a[1])
      .map(([group, p]) => el("span", `ekman-chip${active.has(group) ? " active" : ""}`, `${group} ${p.toFixed(2)}`)),
  );
}

// ---- "Did this help?": one click records the turn's outcome (POST /api/v1/outcomes) --------

function addFeedback(bubble, turnId) {
  const row = el("span", "feedback");
  const ask = el("span", "muted", "Did this help?");
  const yes = el("button", "fb", "yes");
  const no = el("button", "fb", "no");
  yes.type = no.type = "button";
  const answer = async (helped) => {
    yes.disabled = no.disabled = true;
    try {
      const r = await fetch("/api/v1/outcomes", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ turn_id: turnId, user_id: state.userId, session_id: state.sessionId, helped }),
      });
      if (!r.ok) {
        let body = null;
        try { body = await r.json(); } catch (_) { /* not JSON */ }
        throw new Error(errorText(body, r.status));
      }
      row.replaceChildren(el("span", "muted", helped ? "Thanks, noted: it helped." : "Thanks, noted: it did not help."));
    } catch (err) {
      row.replaceChildren(el("span", "warn-inline", `Could not record: ${err.message}`));
    }
  };
  yes.addEventListener("click", () => answer(true));
  no.addEventListener("click", () => answer(false));
  row.append(ask, yes, no);
  bubble.appendChild(row);
}

function renderDecision(d) {
  els.providerName.textContent = d.name || "—";
  els.providerModel.textContent = d.model || "";
  const flags = [];
  if (d.category) flags.push(`category: ${d.category} (${Math.round((d.category_confidence || 0) * 100)}%)`);
  if (d.empathy_override) flags.push("empathy route");
  if (d.continuity) flags.push("kept for continuity");
  if (d.topic_changed) flags.push("topic changed");
  els.providerCategory.textContent = flags.join(" · ");
  els.reasons.replaceChildren(...(d.reasons || []).map((r) => el("li", "", r)));
}

function renderUsage(usage, timings) {
  const cost = usage.cost_usd ? `$${usage.cost_usd.toFixed(6)}` : "$0";
  els.usage.textContent =
    `${usage.total_tokens} tokens (${usage.input_tokens} in / ${usage.output_tokens} out), ${cost}, ` +
    `${Math.round(timings.total_ms)} ms total`;
}

function renderDegraded(list) {
  if (!list.length) { els.degraded.hidden = true; return; }
  els.degraded.hidden = false;
  els.degraded.textContent = `Answered without: ${list.map((d) => `${d.service} (${d.code})`).join(", ")}`;
}

function addStep(step) {
  els.reasoningCard.hidden = false;
  const li = el("li", "", step.content);
  li.appendChild(el("span", "step-meta", `${step.strategy} · value ${step.value.toFixed(2)}${step.terminal ? ` · answer: ${step.answer}` : ""}`));
  els.steps.appendChild(li);
}

// ---- One turn ----------------------------------------------------------------------------

async function send(text) {
  state.busy = true;
  els.send.disabled = true;
  addMessage("user", text);
  const bubble = addMessage("assistant pending", "");
  const degraded = [];
  els.steps.replaceChildren();
  els.reasoningSummary.textContent = "";
  els.reasoningCard.hidden = !els.deep.checked;
  let reply = "";
  let turnId = "";
  let analysed = false;
  try {
    const response = await fetch("/api/v1/chat/stream", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
      body: JSON.stringify({
        message: text,
        user_id: state.userId,
        session_id: state.sessionId,
        history: state.history.slice(-MAX_HISTORY),
        deep_thinking: els.deep.checked,
      }),
    });
    if (!response.ok) {
      let body = null;
      try { body = await response.json(); } catch (_) { /* not JSON */ }
      throw new Error(errorText(body, response.status));
    }
    for await (const { name, data } of sseEvents(response)) {
      if (name === "meta") turnId = data.request_id;
      else if (name === "emotion") { analysed = true; renderEmotion(data); }
      else if (name === "degraded") { degraded.push(data); renderDegraded(degraded); }
      else if (name === "reasoning_step") addStep(data);
      else if (name === "reasoning") {
        els.reasoningCard.hidden = false;
        els.reasoningSummary.textContent =
          `answer ${data.answer || "—"} · confidence ${data.confidence.toFixed(2)} · stopped: ${data.stop_reason}`;
      } else if (name === "decision") renderDecision(data);
      else if (name === "delta") { reply += data.text; bubble.textContent = reply; scrollDown(); }
      else if (name === "usage") renderUsage(data.usage, data.timings_ms);
      else if (name === "done") {
        renderDecision(data.provider);
        renderDegraded(data.degraded || degraded);
        const meta = el("span", "meta", `${data.provider.name} · ${Math.round(data.timings_ms.total_ms)} ms`);
        bubble.appendChild(meta);
        if (turnId && analysed) addFeedback(bubble, turnId);
      } else if (name === "error") throw new Error(errorText(data, data.error && data.error.status));
    }
    state.history.push({ role: "user", content: text }, { role: "assistant", content: reply });
  } catch (err) {
    bubble.remove();
    addMessage("error", `Could not answer: ${err.message}`);
  } finally {
    bubble.classList.remove("pending");
    state.busy = false;
    els.send.disabled = false;
    els.input.focus();
  }
}

els.form.addEventListener("submit", (ev) => {
  ev.preventDefault();
  const text = els.input.value.trim();
  if (!text || state.busy) return;
  els.input.value = "";
  send(text);
});

els.input.addEventListener("keydown", (ev) => {
  if (ev.key === "Enter" && !ev.shiftKey) { ev.preventDefault(); els.form.requestSubmit(); }
});

els.reset.addEventListener("click", () => {
  state.sessionId = newSessionId();
  state.history = [];
  state.timeline = [];
  els.messages.replaceChildren();
  els.states.replaceChildren();
  els.steps.replaceChildren();
  drawChart();
});

async function checkReady() {
  try {
    const r = await fetch("/readyz");
    const body = await r.json();
    els.status.textContent = r.ok ? "all services ready" : `not ready: ${body.not_serving.join(", ")}`;
    els.status.className = `status ${r.ok ? "ok" : "bad"}`;
  } catch (_) {
    els.status.textContent = "gateway unreachable";
    els.status.className = "status bad";
  }
}

drawChart();
checkReady();
setInterval(checkReady, 15000);

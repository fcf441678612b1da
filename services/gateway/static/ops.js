// MasterX ops page: everything from GET /api/v1/ops/overview (admin key), charts drawn as SVG here.
// No libraries, no external requests.
"use strict";

const KEY_STORE = "masterx-ops-key";
const SVG = "http://www.w3.org/2000/svg";
const PALETTE = ["#3b5bdb", "#e8590c", "#2f9e44", "#7048e8", "#c2255c", "#0c8599", "#f08c00", "#5c940d"];

const $ = (id) => document.getElementById(id);
let timer = null;
let runTimer = null;
let refreshMs = 5000;
let lastCategories = [];

// ------------------------------------------------------------------ small DOM/SVG helpers

function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

function s(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

// Charts are drawn in the pixel width they get, so text is never stretched.
function svg(width, height, cls) {
  return s("svg", { viewBox: `0 0 ${width} ${height}`, width, height, class: cls || "", role: "img" });
}

function widthOf(node, fallback, minus = 0) {
  return Math.max(160, Math.floor((node.clientWidth || fallback) - minus));
}

function fmtAge(seconds) {
  if (seconds === null || seconds === undefined) return "never measured";
  if (seconds < 90) return `${Math.round(seconds)} s ago`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 129600) return `${Math.round(seconds / 3600)} h ago`;
  return `${Math.round(seconds / 86400)} d ago`;
}

function usd(x) {
  if (!x) return "$0";
  if (x >= 0.1) return `$${x.toFixed(2)}`;
  if (x >= 0.01) return `$${x.toFixed(3)}`;
  return `$${Number(x.toPrecision(2))}`;
}

function clock(t) {
  return new Date(t * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

function sectionError(container, section) {
  if (section && section.error) {
    container.replaceChildren(
      h("div", { class: "section-error", text: `${section.error.service} unavailable: ${section.error.message}` }),
    );
    return true;
  }
  return false;
}

// ------------------------------------------------------------------ API

function key() {
  return sessionStorage.getItem(KEY_STORE) || "";
}

async function api(path, options = {}) {
  const resp = await fetch(path, {
    ...options,
    headers: { "X-API-Key": key(), "Content-Type": "application/json", ...(options.headers || {}) },
  });
  if (resp.status === 401 || resp.status === 403) {
    const body = await resp.json().catch(() => ({}));
    const err = new Error((body.error && body.error.message) || `HTTP ${resp.status}`);
    err.auth = true;
    throw err;
  }
  const body = await resp.json();
  if (!resp.ok) throw new Error((body.error && body.error.message) || `HTTP ${resp.status}`);
  return body;
}

// ------------------------------------------------------------------ leaderboards

function renderBoards(boards) {
  const root = $("boards");
  if (sectionError(root, boards)) return;
  lastCategories = boards.map((b) => b.category);
  const rowH = 50;
  root.replaceChildren(
    ...boards.map((board) => {
      const w = board.weights || {};
      const title = h(
        "h3",
        {},
        h("span", { text: board.category }),
        h("span", {
          class: "weights",
          text: w.quality !== undefined ? `weights q ${w.quality} · s ${w.speed} · c ${w.cost}` : "",
        }),
      );
      const card = h("div", { class: "board", "data-category": board.category }, title);
      if (board.error) {
        card.append(h("div", { class: "section-error", text: board.error.message }));
        return card;
      }
      if (!board.rows.length) {
        card.append(h("div", { class: "empty", text: "no providers" }));
        return card;
      }
      const chart = svg(300, board.rows.length * rowH, "board-chart");
      chart.removeAttribute("width");
      chart.removeAttribute("height");
      board.rows.forEach((row, i) => {
        const y = i * rowH;
        const g = s("g", { class: "board-row", "data-provider": row.provider });
        g.append(s("text", { x: 0, y: y + 11, class: "bar-label" }, `${i + 1}. ${row.provider}`));
        g.append(s("text", { x: 120, y: y + 11, class: "bar-label" }, `score ${row.score.toFixed(1)}`));
        const src = row.source === "benchmark" ? `benchmark · ${fmtAge(row.age_seconds)}` : row.source;
        g.append(s("text", { x: 300, y: y + 11, "text-anchor": "end", class: `source source-${row.source}` }, src));
        [
          ["quality", row.quality],
          ["speed", row.speed],
          ["cost", row.cost],
        ].forEach(([name, value], j) => {
          const by = y + 16 + j * 10;
          g.append(s("text", { x: 0, y: by + 7, class: "bar-muted" }, name));
          g.append(s("rect", { x: 44, y: by, width: 226, height: 7, rx: 2, class: "bar-track" }));
          const width = Math.max(0, Math.min(100, value)) * 2.26;
          const bar = s("rect", { x: 44, y: by, width, height: 7, rx: 2, class: `bar bar-${name}` });
          bar.append(s("title", {}, `${row.provider} ${name} ${value.toFixed(1)}`));
          g.append(bar);
          g.append(s("text", { x: 300, y: by + 7, "text-anchor": "end", class: "bar-muted" }, value.toFixed(0)));
        });
        if (row.excluded) {
          g.append(s("title", {}, `excluded: ${row.reason}`));
          g.setAttribute("opacity", "0.45");
        }
        chart.append(g);
      });
      card.append(chart);
      return card;
    }),
  );
  const legend = h("div", { class: "legend" });
  for (const [name, color] of [["quality", "var(--quality)"], ["speed", "var(--speed)"], ["cost (100 = cheapest)", "var(--cost)"]]) {
    legend.append(h("span", {}, h("span", { class: "swatch", style: `background:${color}` }), name));
  }
  root.append(legend);
}

// ------------------------------------------------------------------ providers

function sparkline(history, sampleSeconds, W) {
  const H = 56;
  const top = 4;
  const bottom = H - 12;
  const chart = svg(W, H, "spark");
  chart.append(s("line", { x1: 0, x2: W, y1: bottom, y2: bottom, class: "grid" }));
  chart.append(s("line", { x1: 0, x2: W, y1: top, y2: top, class: "grid" }));
  if (!history.length) {
    chart.append(s("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "axis" }, "no samples yet"));
    return chart;
  }
  const t0 = history[0].t;
  const t1 = Math.max(history[history.length - 1].t, t0 + 1);
  const x = (t) => ((t - t0) / (t1 - t0)) * (W - 28);
  const y = (r) => bottom - Math.max(0, Math.min(1, r)) * (bottom - top);
  history.forEach((p, i) => {
    const next = i + 1 < history.length ? history[i + 1].t : t1;
    const width = Math.max(1, x(next) - x(p.t));
    chart.append(s("rect", { x: x(p.t), y: top, width, height: bottom - top, class: `band band-${p.breaker_state}` }));
  });
  const points = history.map((p) => `${x(p.t).toFixed(1)},${y(p.failure_rate).toFixed(1)}`);
  if (points.length === 1) points.push(`${(W - 28).toFixed(1)},${y(history[0].failure_rate).toFixed(1)}`);
  chart.append(s("polyline", { points: points.join(" "), class: "rate" }));
  chart.append(s("text", { x: W, y: top + 7, "text-anchor": "end", class: "axis" }, "100%"));
  chart.append(s("text", { x: W, y: bottom, "text-anchor": "end", class: "axis" }, "0%"));
  const span = Math.round(t1 - t0);
  const label = span < 120 ? `${span} s` : `${Math.round(span / 60)} min`;
  chart.append(s("text", { x: 0, y: H - 1, class: "axis" }, `${clock(t0)}  ·  ${history.length} samples over ${label} (every ${sampleSeconds} s)`));
  return chart;
}

function renderProviders(providers, sampleSeconds) {
  const root = $("providers");
  if (sectionError(root, providers)) return;
  if (!providers.length) {
    root.replaceChildren(h("div", { class: "empty", text: "no providers configured" }));
    return;
  }
  root.replaceChildren(
    ...providers.map((p) => {
      const state = p.breaker_state || "closed";
      const info = h(
        "div",
        {},
        h("div", { class: "name", text: p.name }),
        h("span", { class: `badge ${state}`, text: state.replace("_", " ") }),
        h("div", {
          class: "meta",
          text: `${p.kind} · ${p.model} · failures ${(p.failure_rate * 100).toFixed(0)}% of ${p.window_calls} calls`,
        }),
      );
      const chart = sparkline(p.history || [], sampleSeconds, widthOf(root, 440, 150));
      return h("div", { class: "provider", "data-provider": p.name, "data-state": state }, info, chart);
    }),
  );
}

// ------------------------------------------------------------------ spend

function renderSpend(costs) {
  const root = $("spend-chart");
  const legend = $("spend-legend");
  const budgets = $("budgets");
  if (sectionError(root, costs)) {
    legend.replaceChildren();
    budgets.replaceChildren();
    return;
  }
  const W = widthOf(root, 600);
  const H = 200;
  const left = 72;
  const bottom = H - 22;
  const chart = svg(W, H, "spend");
  const colors = {};
  costs.providers.forEach((p, i) => {
    colors[p] = PALETTE[i % PALETTE.length];
  });
  const budgetTotal = costs.today.every((b) => b.budget_usd > 0) && costs.today.length
    ? costs.today.reduce((a, b) => a + b.budget_usd, 0)
    : 0;
  const maxY = Math.max(...costs.per_day, budgetTotal, 1e-6) * 1.1;
  const yOf = (v) => bottom - (v / maxY) * (bottom - 8);
  for (let i = 0; i <= 4; i += 1) {
    const v = (maxY / 4) * i;
    chart.append(s("line", { x1: left, x2: W, y1: yOf(v), y2: yOf(v), class: "grid" }));
    chart.append(s("text", { x: left - 4, y: yOf(v) + 3, "text-anchor": "end", class: "axis" }, usd(v)));
  }
  const n = costs.days.length;
  const slot = (W - left) / Math.max(1, n);
  costs.days.forEach((day, i) => {
    let acc = 0;
    for (const p of costs.providers) {
      const v = costs.series[p][i];
      if (v <= 0) continue;
      const rect = s("rect", {
        x: left + i * slot + slot * 0.15,
        y: yOf(acc + v),
        width: slot * 0.7,
        height: Math.max(1, yOf(acc) - yOf(acc + v)),
        fill: colors[p],
        class: "bar",
        "data-day": day,
        "data-provider": p,
      });
      rect.append(s("title", {}, `${day} ${p}: ${usd(v)}`));
      chart.append(rect);
      acc += v;
    }
    if (n <= 16 || i % 2 === 0) {
      chart.append(s("text", { x: left + i * slot + slot / 2, y: H - 6, "text-anchor": "middle", class: "axis" }, day.slice(5)));
    }
  });
  if (budgetTotal > 0) {
    chart.append(s("line", { x1: left, x2: W, y1: yOf(budgetTotal), y2: yOf(budgetTotal), stroke: "#c92a2a", "stroke-dasharray": "4 3", class: "budget-line" }));
    chart.append(s("text", { x: W, y: yOf(budgetTotal) - 3, "text-anchor": "end", class: "axis" }, `daily budget ${usd(budgetTotal)}`));
  }
  root.replaceChildren(chart);
  legend.replaceChildren(
    ...costs.providers.map((p) => h("span", {}, h("span", { class: "swatch", style: `background:${colors[p]}` }), `${p} ${usd(costs.series[p].reduce((a, b) => a + b, 0))}`)),
    h("span", { text: `total ${usd(costs.total_usd)} over ${n} days` }),
  );
  budgets.replaceChildren(
    ...costs.today.map((b) => {
      const bw = widthOf(budgets, 500, 320);
      const bar = svg(bw, 12);
      bar.append(s("rect", { x: 0, y: 0, width: bw, height: 12, rx: 3, class: "bar-track" }));
      const share = b.budget_usd > 0 ? Math.min(1, b.spent_usd / b.budget_usd) : 0;
      bar.append(s("rect", { x: 0, y: 0, width: bw * share, height: 12, rx: 3, class: share >= 1 ? "over" : "used" }));
      const text = b.budget_usd > 0 ? `${usd(b.spent_usd)} of ${usd(b.budget_usd)} today` : `${usd(b.spent_usd)} today · no budget`;
      return h("div", { class: "budget", "data-provider": b.provider }, h("span", { text: b.provider }), bar, h("span", { text }));
    }),
  );
}

// ------------------------------------------------------------------ runs

function renderRuns(runs) {
  const root = $("runs");
  if (sectionError(root, runs)) return;
  const fieldset = $("run-categories");
  if (fieldset.querySelectorAll("input").length === 0 && lastCategories.length) {
    for (const cat of lastCategories) {
      fieldset.append(h("label", {}, h("input", { type: "checkbox", value: cat, name: "category" }), ` ${cat}`));
    }
  }
  if (!runs.length) {
    root.replaceChildren(h("div", { class: "empty", text: "no benchmark runs yet" }));
    return;
  }
  root.replaceChildren(...runs.map(renderRun));
  const active = runs.some((r) => r.state === "running" || r.state === "pending");
  if (active && runTimer === null) runTimer = setInterval(pollActiveRuns, 1000);
  if (!active && runTimer !== null) {
    clearInterval(runTimer);
    runTimer = null;
  }
}

function renderRun(run) {
  const total = run.total_items || 0;
  const done = (run.completed_items || 0) + (run.skipped_items || 0);
  const bar = svg(300, 10);
  bar.setAttribute("preserveAspectRatio", "none");  // a plain bar: stretching it is fine
  bar.removeAttribute("width");
  bar.append(s("rect", { x: 0, y: 0, width: 300, height: 10, rx: 3, class: "bar-track" }));
  bar.append(s("rect", { x: 0, y: 0, width: total ? (300 * done) / total : 0, height: 10, rx: 3, class: "fill" }));
  const head = h(
    "div",
    { class: "head" },
    h("span", { class: "id", text: run.run_id }),
    h("span", { class: "state", text: run.state }),
  );
  if (run.state === "running" || run.state === "pending") {
    head.append(h("button", { type: "button", class: "secondary cancel", text: "Cancel", onclick: () => cancelRun(run.run_id) }));
  }
  const cats = (run.categories || []).join(", ") || "all";
  const cost = run.cost_usd !== undefined ? ` · ${usd(run.cost_usd)}` : "";
  const when = run.started_at ? ` · started ${clock(run.started_at)}` : "";
  const line = `${done}/${total} items · ${cats} · ${(run.providers || []).join(", ")} · ${run.trigger}${cost}${when}`;
  const node = h("div", { class: `run ${run.state}`, "data-run": run.run_id, "data-state": run.state }, head, bar, h("div", { class: "hint", text: line }));
  if (run.error) node.append(h("div", { class: "error", text: run.error }));
  return node;
}

async function pollActiveRuns() {
  const active = [...document.querySelectorAll(".run[data-state=running], .run[data-state=pending]")];
  if (!active.length) {
    clearInterval(runTimer);
    runTimer = null;
    return;
  }
  for (const node of active) {
    try {
      const run = await api(`/api/v1/admin/benchmark-runs/${encodeURIComponent(node.dataset.run)}`);
      node.replaceWith(renderRun(run));
    } catch (err) {
      if (err.auth) return signOut(err.message);
    }
  }
}

async function startRun(event) {
  event.preventDefault();
  const categories = [...document.querySelectorAll("#run-categories input:checked")].map((i) => i.value);
  const providers = $("run-providers").value.split(",").map((p) => p.trim()).filter(Boolean);
  const items = parseInt($("run-items").value || "0", 10);
  $("run-start").disabled = true;
  try {
    const run = await api("/api/v1/ops/benchmark-runs", {
      method: "POST",
      body: JSON.stringify({ categories, providers, max_items_per_suite: items }),
    });
    $("run-msg").textContent = `started ${run.run_id}`;
    await refresh();
  } catch (err) {
    $("run-msg").textContent = `could not start: ${err.message}`;
  } finally {
    $("run-start").disabled = false;
  }
}

async function cancelRun(runId) {
  try {
    await api(`/api/v1/admin/benchmark-runs/${encodeURIComponent(runId)}/cancel`, { method: "POST" });
    $("run-msg").textContent = `cancelled ${runId}`;
  } catch (err) {
    $("run-msg").textContent = `could not cancel: ${err.message}`;
  }
  await refresh();
}

// ------------------------------------------------------------------ decisions

function renderDecisions(decisions) {
  const root = $("decisions");
  if (!decisions.length) {
    root.replaceChildren(h("div", { class: "empty", text: "no chat turns since the gateway started" }));
    return;
  }
  root.replaceChildren(
    ...decisions.map((d) => {
      const head = h(
        "div",
        { class: "head" },
        h("span", { class: "when", text: clock(d.t) }),
        h("span", { class: "provider-name", text: d.provider }),
        h("span", { text: `${d.category} (${(d.category_confidence * 100).toFixed(0)}%)` }),
        h("span", { class: "hint", text: `${d.endpoint} · ${d.total_ms.toFixed(0)} ms · ${usd(d.cost_usd)}` }),
      );
      if (d.empathy_override) head.append(h("span", { class: "flag", text: "empathy" }));
      if (d.continuity) head.append(h("span", { class: "flag", text: "continuity" }));
      if (d.topic_changed) head.append(h("span", { class: "flag", text: "topic changed" }));
      for (const svc of d.degraded) head.append(h("span", { class: "flag", text: `${svc} degraded` }));
      const reasons = h("ul", { class: "reasons" }, ...d.reasons.map((r) => h("li", { text: r })));
      const ranked = d.candidates
        .map((c) => `${c.provider} ${Number(c.score).toFixed(1)}${c.excluded ? ` (excluded: ${c.reason})` : ""} [${c.score_source}]`)
        .join(" · ");
      return h("div", { class: "decision", "data-request": d.request_id }, head, reasons, h("div", { class: "hint", text: ranked }));
    }),
  );
}

// ------------------------------------------------------------------ refresh loop and login

async function refresh() {
  try {
    const data = await api("/api/v1/ops/overview");
    refreshMs = Math.max(2000, (data.sample_seconds || 5) * 1000);
    renderBoards(data.leaderboards);
    renderProviders(data.providers, data.sample_seconds || 5);
    renderSpend(data.costs);
    renderRuns(data.runs);
    renderDecisions(data.decisions);
    const badge = $("updated");
    badge.textContent = `updated ${clock(data.generated_at)}`;
    badge.className = "status ok";
    badge.dataset.generated = String(data.generated_at);
    return true;
  } catch (err) {
    if (err.auth) {
      signOut(err.message);
      return false;
    }
    $("updated").textContent = `refresh failed: ${err.message}`;
    $("updated").className = "status bad";
    return false;
  }
}

function schedule() {
  if (timer !== null) clearTimeout(timer);
  timer = setTimeout(async () => {
    if ($("auto").checked && key()) await refresh();
    schedule();
  }, refreshMs);
}

function showDash() {
  $("login").hidden = true;
  $("dash").hidden = false;
  $("logout").hidden = false;
}

function signOut(message) {
  sessionStorage.removeItem(KEY_STORE);
  $("dash").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
}

async function login(event) {
  event.preventDefault();
  sessionStorage.setItem(KEY_STORE, $("key").value.trim());
  if (await refresh()) {
    $("key").value = "";
    $("login-error").textContent = "";
    showDash();
  }
}

$("login-form").addEventListener("submit", login);
$("run-form").addEventListener("submit", startRun);
$("refresh").addEventListener("click", refresh);
$("logout").addEventListener("click", () => signOut(""));

(async () => {
  if (key() && (await refresh())) showDash();
  else if (!key()) signOut("");
  schedule();
})();

// The supervisor's live status page: polls /status and redraws in place (no reload, no framework, no CDN).
// Only textContent and class names are written, so nothing in /status can become markup.
"use strict";
(() => {
  const STATES = ["ACTIVE", "RESUMING", "IDENTIFYING", "QUEUED", "STARTING", "PENDING", "DISCONNECTED",
                  "FATALLY_CLOSED", "WORKER_DOWN", "UNKNOWN"];
  const ALWAYS = new Set(STATES.slice(0, 4).concat(["DISCONNECTED", "FATALLY_CLOSED"]));
  const every = Math.max(200, Number(new URLSearchParams(location.search).get("every")) || 1000);
  const $ = (id) => document.getElementById(id);
  let tiles = [];
  let last = null;
  let selected = null;
  let hovered = null; // the shard under the pointer: its details stay shown across redraws, before the selected one's
  let lastOk = 0;

  const known = (state) => (STATES.includes(state) ? state : "UNKNOWN");
  const seconds = (s) => (s == null ? "–" : s < 1 ? (s * 1000).toFixed(0) + " ms" : s < 120 ? s.toFixed(1) + " s"
                          : s < 7200 ? (s / 60).toFixed(0) + " min" : (s / 3600).toFixed(1) + " h");
  const ms = (s) => (s == null ? "–" : (s * 1000).toFixed(1) + " ms");
  const mib = (b) => (b ? (b / 1048576).toFixed(0) + " MiB" : "–");
  const ranges = (rs) => (rs || []).map((r) => (r[0] === r[1] ? String(r[0]) : r[0] + "–" + r[1])).join(", ");
  const budget = (b) => (b ? b.remaining + " / " + b.total + (b.reserve ? " (reserve " + b.reserve + ")" : "") : "–");

  function row(cells, cls) {
    const tr = document.createElement("tr");
    if (cls) tr.className = cls;
    for (const c of cells) {
      const td = document.createElement("td");
      td.textContent = c == null ? "–" : String(c);
      tr.append(td);
    }
    return tr;
  }

  function fill(tableId, rows) {
    $(tableId).tBodies[0].replaceChildren(...rows);
  }

  function shardText(s) {
    return "shard " + s.id + " · " + s.state + " · worker " + s.worker + " · latency " + ms(s.latency) +
      " · last event " + seconds(s.last_event_age) + " ago · resumes " + s.resumes +
      (s.session ? " · has session" : "");
  }

  function renderGrid(shards) {
    const grid = $("grid");
    if (tiles.length !== shards.length) {
      tiles = shards.map(() => {
        const t = document.createElement("button");
        t.type = "button";
        return t;
      });
      grid.replaceChildren(...tiles);
      grid.className = "grid" + (shards.length > 256 ? " large" : shards.length > 64 ? " medium" : "");
    }
    shards.forEach((s, i) => {
      const t = tiles[i];
      const cls = "tile s-" + known(s.state).toLowerCase() + (s.id === selected ? " selected" : "");
      if (t.className !== cls) t.className = cls;
      if (t.dataset.state !== s.state) t.dataset.state = s.state;
      if (t.dataset.shard !== String(s.id)) {
        t.dataset.shard = String(s.id);
        t.textContent = String(s.id);
      }
      t.title = shardText(s);
    });
  }

  function renderLegend(shards) {
    const counts = new Map();
    for (const s of shards) counts.set(known(s.state), (counts.get(known(s.state)) || 0) + 1);
    $("legend").replaceChildren(...STATES.filter((st) => ALWAYS.has(st) || counts.get(st)).map((st) => {
      const li = document.createElement("li");
      li.className = "s-" + st.toLowerCase();
      li.dataset.state = st;
      li.textContent = st.toLowerCase().replace("_", " ") + " " + (counts.get(st) || 0);
      return li;
    }));
  }

  function renderDetail() {
    const id = hovered != null ? hovered : selected;
    const s = last && id != null ? last.shards.find((x) => x.id === id) : null;
    $("detail").textContent = s ? shardText(s) : "Hover or click a shard for its details.";
  }

  function renderHosts(hosts) {
    $("hosts-section").hidden = !hosts;
    if (!hosts) return;
    fill("hosts", hosts.map((h) => row([
      h.host, h.hostname, h.pid, ranges(h.shards),
      Object.entries(h.states || {}).map(([k, v]) => k.toLowerCase() + " " + v).join(", "),
      h.workers, h.identify_queue, budget(h.session_budget), seconds(h.age) + (h.stopping ? " (stopping)" : ""),
    ], h.http_url === location.origin ? "this-host" : "")));
  }

  // a live reshard under way (or how the latest ended), for the summary line
  function resharding(r) {
    if (!r || r.phase === "idle") return "";
    const where = r.phase === "warming" || r.phase === "starting" ? " " + r.ready + "/" + r.to + " ready" : "";
    return " · reshard " + r.from + " → " + r.to + ": " + r.phase.replace("_", " ") + where;
  }

  function render(st) {
    last = st;
    const shards = st.shards || [];
    document.title = st.active + "/" + shards.length + " active · shardstack";
    const hosts = st.hosts || [];
    const run = hosts.reduce((n, h) => n + (h.shards || []).reduce((m, r) => m + r[1] - r[0] + 1, 0), 0);
    $("summary").textContent = st.active + " / " + shards.length + " shards active (of " + st.shard_total + ")" +
      (hosts.length ? " · " + hosts.length + " hosts: " + hosts.reduce((n, h) => n + (h.active || 0), 0) +
        " / " + run + " active" : "") +
      " · uptime " + seconds(st.uptime) + (st.rolling ? " · rolling restart" : "") + (st.stopping ? " · stopping" : "") +
      resharding(st.reshard);
    $("shard-count").textContent = "(" + shards.length + ")";
    $("queue").textContent = String(st.identify_queue);
    $("budget").textContent = budget(st.session_budget);
    $("reset").textContent = st.session_budget ? seconds(st.session_budget.reset_in) : "–";
    $("coordinator").textContent = st.coordinator_up ? "up" : "unreachable: identifies wait";
    renderHosts(st.hosts);
    renderLegend(shards);
    renderGrid(shards);
    renderDetail();
    fill("workers", (st.workers || []).map((w) => row([
      w.id, w.pid, w.state, w.shards[0] + "–" + w.shards[1], mib(w.rss), ms(w.loop_lag), ms(w.ipc_rtt),
      w.restarts, w.blocked, w.handler_errors + w.consumer_errors,
    ])));
  }

  function freshness() {
    const age = lastOk ? (Date.now() - lastOk) / 1000 : null;
    const stale = age == null || age > 3 * every / 1000 + 1;
    document.body.classList.toggle("stale", stale);
    $("fresh").textContent = age == null ? "waiting for /status" : stale ? "stale: /status unreachable for " +
      seconds(age) : "live";
  }

  async function poll() {
    try {
      const r = await fetch("/status", { cache: "no-store" });
      if (r.ok) {
        render(await r.json());
        lastOk = Date.now();
      }
    } catch (e) {
      // the supervisor may be restarting: keep the last picture, marked stale
    }
    freshness();
    setTimeout(poll, every);
  }

  function pick(e) {
    const t = e.target.closest(".tile");
    if (!t) return;
    if (e.type === "mouseover") {
      hovered = Number(t.dataset.shard);
      $("detail").textContent = t.title;
      return;
    }
    const id = Number(t.dataset.shard);
    selected = selected === id ? null : id;
    for (const x of $("grid").querySelectorAll(".selected")) x.classList.remove("selected");
    if (selected != null) t.classList.add("selected");
    renderDetail();
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("grid").addEventListener("click", pick);
    $("grid").addEventListener("mouseover", pick);
    $("grid").addEventListener("mouseleave", () => {
      hovered = null;
      renderDetail();
    });
    poll();
  });
})();

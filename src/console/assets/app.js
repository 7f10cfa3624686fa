// riskstream console: one page, no build step. Live via Server-Sent Events (the browser
// reconnects by itself; the server sends a full snapshot on every (re)connect).
// One card per incident (issue #23), its episodes folded under it; an episode without an
// incident (messages from before incidents) gets a card of its own.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const LEVELS = { red: 4, orange: 3, yellow: 2, blue: 1 };
  const ROMAN = { red: "I", orange: "II", yellow: "III", blue: "IV" };
  const DAY = 24 * 3600 * 1000;
  const st = {
    center: null, centers: [], names: {}, readToken: false,
    episodes: new Map(), incidents: new Map(), nodes: new Map(), expanded: new Set(),
    es: null, audio: null, soundOn: false,
    dlg: null, // { id, kind, act }
    shelves: [], // GET /api/shelves
  };
  const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) =>
    ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  const token = () => $("token").value.trim();
  const fmtNum = (x) => (typeof x === "number" ? (Math.abs(x) >= 100 ? x.toFixed(0) : +x.toFixed(2)) : "–");
  const fmtAge = (ms) => {
    const s = Math.max(0, Math.round(ms / 1000));
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m";
    if (s < 86400) return Math.floor(s / 3600) + "h " + Math.floor((s % 3600) / 60) + "m";
    return Math.floor(s / 86400) + "d";
  };
  const fmtTime = (iso) => iso ? new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) : "";
  const params = new URLSearchParams(location.search);

  function showError(msg) {
    const e = $("error");
    e.textContent = msg; e.hidden = !msg;
    if (msg) setTimeout(() => { if (e.textContent === msg) e.hidden = true; }, 10000);
  }

  async function loadCenters() {
    const r = await fetch("/api/centers", { headers: token() ? { Authorization: "Bearer " + token() } : {} });
    if (r.status === 401 || r.status === 403) {
      st.readToken = true;
      throw new Error("this console needs your operator token to show anything: type it above");
    }
    if (!r.ok) throw new Error("centers: HTTP " + r.status);
    const j = await r.json();
    st.readToken = j.read_requires_token;
    st.centers = j.centers;
    const sel = $("center");
    sel.textContent = "";
    let group = sel;
    for (const c of j.centers) {
      st.names[c.code] = c.name;
      if (c.tier === "county") {
        group = document.createElement("optgroup");
        group.label = c.name;
        sel.append(group);
      }
      const o = document.createElement("option");
      o.value = c.code;
      o.textContent = (c.tier === "township" ? "\u2003" : "") + c.name + " (" + c.code + ")";
      (c.tier === "city" ? sel : group).append(o);
    }
    const want = params.get("center") || localStorage.getItem("rs.center") || j.city;
    sel.value = st.names[want] ? want : j.city;
  }

  function connect() {
    if (st.es) st.es.close();
    st.center = $("center").value;
    localStorage.setItem("rs.center", st.center);
    $("center-name").textContent = "· " + (st.names[st.center] || st.center);
    document.title = "riskstream · " + (st.names[st.center] || st.center);
    let url = "/api/stream?center=" + encodeURIComponent(st.center);
    if (st.readToken && token()) url += "&token=" + encodeURIComponent(token());
    const es = new EventSource(url);
    st.es = es;
    setConn("connecting…", "");
    es.onopen = () => setConn("live", "live");
    es.onerror = () => setConn("disconnected: reconnecting…", "down");
    es.addEventListener("snapshot", (e) => {
      const j = JSON.parse(e.data);
      st.episodes = new Map(j.episodes.map((v) => [v.alert_id, v]));
      st.incidents = new Map((j.incidents || []).map((v) => [v.incident_id, v]));
      setConn("live", "live");
      schedule();
    });
    es.addEventListener("incident", (e) => {
      const v = JSON.parse(e.data);
      const before = st.incidents.get(v.incident_id);
      st.incidents.set(v.incident_id, v);
      const i = v.incident;
      const wasOpenRed = before && before.open && before.incident.level === "red";
      const reached = before && (before.incident.escalations || []).length < (i.escalations || []).length;
      if (v.open && !before) announce("New " + i.level + " incident: " + i.title + ", " + i.region_name);
      if (reached) announce("Escalated to this center: " + i.title);
      if (v.open && i.level === "red" && (!wasOpenRed || reached)) redCue(v.incident_id, i.title, i.region_name);
      schedule();
    });
    es.addEventListener("episode", (e) => {
      const v = JSON.parse(e.data);
      const before = st.episodes.get(v.alert_id);
      st.episodes.set(v.alert_id, v);
      // Members are announced through their incident; a lone episode speaks for itself.
      if (!v.alert.incident_id) {
        const wasOpenRed = before && before.open && before.alert.level === "red";
        if (v.open && !before) announce("New " + v.alert.level + " alert: " + v.alert.title + ", " + v.alert.region_name);
        if (v.open && v.alert.level === "red" && !wasOpenRed) redCue(v.alert_id, v.alert.title, v.alert.region_name);
      }
      schedule();
    });
  }

  function setConn(text, cls) {
    const c = $("conn");
    c.textContent = text;
    c.className = "conn " + cls;
  }

  function announce(text) {
    const a = $("announce");
    const p = document.createElement("p");
    p.textContent = text;
    a.append(p);
    while (a.childNodes.length > 5) a.firstChild.remove();
  }

  function redCue(key, title, region) {
    const b = $("red-banner");
    b.textContent = "RED ALERT (I): " + title + " — " + region;
    b.hidden = false;
    clearTimeout(st.bannerTimer);
    st.bannerTimer = setTimeout(() => { b.hidden = true; }, 30000);
    st.fresh = st.fresh || new Set();
    st.fresh.add(key);
    setTimeout(() => st.fresh.delete(key), 8000);
    beep();
  }

  function beep() {
    if (!st.soundOn || !st.audio) return;
    const ctx = st.audio;
    const t0 = ctx.currentTime;
    for (let i = 0; i < 3; i++) {
      const o = ctx.createOscillator(), g = ctx.createGain();
      o.type = "square";
      o.frequency.value = 880;
      g.gain.setValueAtTime(0.0001, t0 + i * 0.3);
      g.gain.exponentialRampToValueAtTime(0.2, t0 + i * 0.3 + 0.02);
      g.gain.exponentialRampToValueAtTime(0.0001, t0 + i * 0.3 + 0.2);
      o.connect(g).connect(ctx.destination);
      o.start(t0 + i * 0.3);
      o.stop(t0 + i * 0.3 + 0.22);
    }
  }

  let pending = false;
  function schedule() {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => { pending = false; render(); });
  }

  function filters() {
    const levels = new Set([...document.querySelectorAll('input[name="level"]:checked')].map((i) => i.value));
    return { stream: $("stream").value, levels };
  }

  // A card: an incident with its member episodes, or a lone episode.
  function cards() {
    const out = [];
    const members = new Map();
    for (const v of st.episodes.values()) {
      const id = v.alert.incident_id;
      if (id && st.incidents.has(id)) {
        if (!members.has(id)) members.set(id, []);
        members.get(id).push(v);
      } else if (v.alert.route.includes(st.center)) {
        out.push({ key: v.alert_id, kind: "episode", level: v.alert.level, stream: v.alert.stream,
          open: v.open, opened_at: v.opened_at, closed_at: v.closed_at, ep: v });
      }
    }
    for (const v of st.incidents.values()) {
      if (!v.route.includes(st.center)) continue;
      const order = new Map(v.members.map((m, i) => [m, i]));
      const ms = (members.get(v.incident_id) || []).sort((a, b) => (order.get(a.alert_id) ?? 1e9) - (order.get(b.alert_id) ?? 1e9));
      out.push({ key: v.incident_id, kind: "incident", level: v.incident.level, stream: v.incident.stream,
        open: v.open, opened_at: v.opened_at, closed_at: v.closed_at, inc: v, members: ms });
    }
    return out;
  }

  const order = (a, b) =>
    (LEVELS[b.level] - LEVELS[a.level]) ||
    (Date.parse(b.opened_at) - Date.parse(a.opened_at)) ||
    (a.key < b.key ? -1 : 1);

  function render() {
    const f = filters();
    const now = Date.now();
    const open = [], closed = [];
    for (const c of cards()) {
      if (f.stream && c.stream !== f.stream) continue;
      if (!f.levels.has(c.level)) continue;
      if (c.open) open.push(c);
      else if (!c.closed_at || now - Date.parse(c.closed_at) < DAY) closed.push(c);
    }
    open.sort(order);
    closed.sort((a, b) => Date.parse(b.closed_at || 0) - Date.parse(a.closed_at || 0));
    place($("open"), open);
    place($("closed"), closed);
    $("open-count").textContent = "(" + open.length + ")";
    $("closed-count").textContent = "(" + closed.length + ")";
    $("open-empty").hidden = open.length > 0;
    ages();
  }

  function signature(c) {
    // Shelving changes a card's badges without any message about its episodes.
    const shelves = st.shelves.map((x) => x.shelf_id + "@" + x.until).join(",") + "|";
    if (c.kind === "episode") return shelves + c.ep.updated_at + "|" + c.open + "|" + JSON.stringify(c.ep.alert.actions || {});
    return shelves + c.inc.updated_at + "|" + c.open + "|" + JSON.stringify(c.inc.actions || {}) + "|" +
      (c.inc.incident.escalations || []).length + "|" + st.expanded.has(c.key) + "|" +
      c.members.map((m) => m.alert_id + "@" + m.updated_at).join(",");
  }

  // Keyed update: a card is rebuilt only when it changed, and moved only when the order
  // changed, so hundreds of cards stay cheap and focus is kept.
  function place(list, cs) {
    const keep = new Set(cs.map((c) => c.key));
    for (const li of [...list.children]) if (!keep.has(li.dataset.id)) li.remove();
    let prev = null;
    for (const c of cs) {
      let li = st.nodes.get(c.key);
      const sig = signature(c);
      if (!li) {
        li = document.createElement("li");
        li.dataset.id = c.key;
        li.dataset.kind = c.kind;
        st.nodes.set(c.key, li);
      }
      if (li.dataset.sig !== sig) {
        li.dataset.sig = sig;
        li.className = "ep lvl-" + c.level;
        li.innerHTML = c.kind === "incident" ? incidentCard(c) : card(c.ep);
      }
      li.classList.toggle("new", !!(st.fresh && st.fresh.has(c.key)));
      const want = prev ? prev.nextSibling : list.firstChild;
      if (want !== li) list.insertBefore(li, want);
      prev = li;
    }
  }

  const titleId = (key) => "t-" + btoa(unescape(encodeURIComponent(key))).replace(/[^A-Za-z0-9]/g, "");

  function stateLine(x, open) {
    const state = [];
    if (x.acknowledged_at) state.push("Acknowledged " + fmtTime(x.acknowledged_at) + " by " + esc(st.names[x.acknowledged_by] || x.acknowledged_by));
    if (x.dispatched_to) state.push("Dispatched: " + esc(x.dispatched_to));
    if (x.closed_outcome) state.push("Closed: " + esc(x.closed_outcome.replace("_", " ")) + " (" + esc(st.names[x.closed_by] || x.closed_by) + ")");
    else if (!open) state.push("Resolved by the detector");
    return state;
  }

  function buttons(open, x) {
    return open ? `<div class="actions">
        <button type="button" data-act="ack" ${x.acknowledged_at ? "disabled" : ""}>Acknowledge</button>
        <button type="button" data-act="dispatch">Dispatch…</button>
        <button type="button" data-act="close">Close…</button></div>` : "";
  }

  function incidentCard(c) {
    const v = c.inc, i = v.incident, x = v.actions || {};
    const id = titleId(c.key);
    const openMembers = c.members.filter((m) => m.alert.status === "firing").length;
    const detectors = [...new Set(c.members.map((m) => m.alert.detector))].sort().join(", ");
    const state = stateLine(x, c.open);
    const escalations = (i.escalations || []).map((e) =>
      `<p class="escalated">Escalated to ${esc(st.names[e.to] || e.to)} at ${fmtTime(e.at)}: ${esc(e.reason)}</p>`).join("");
    const subject = Object.entries(i.subject || {}).map(([k, val]) => esc(k) + ": " + esc(val)).join(" · ");
    const items = c.members.map((m) => {
      const a = m.alert, e = a.evidence || {};
      return `<li class="member lvl-${esc(a.level)}" data-alert="${esc(a.alert_id)}">
        <span class="badge">${esc(a.level.toUpperCase())}</span> ${esc(a.title)}
        <span class="where">· ${esc(a.detector)} · ${esc(a.subject.sensor_id || "")} · ${a.status === "firing" ? "open" : "resolved"}</span>${shelfBadge(a.subject)}
        <span class="evidence">observed ${fmtNum(e.observed)} vs expected ${fmtNum(e.expected)}, score ${fmtNum(e.score)} (threshold ${fmtNum(e.threshold)})</span></li>`;
    }).join("");
    return `<article aria-labelledby="${id}">
      <div class="top"><span class="badge">${esc(i.level.toUpperCase())} · ${ROMAN[i.level]}</span>
        <h3 id="${id}">${esc(i.title)}</h3>
        <span class="age" data-since="${esc(v.opened_at)}" title="opened ${esc(v.opened_at)}"></span></div>
      <p class="where">${esc(i.region_name)} · ${esc(i.stream)} incident · ${esc(detectors)}</p>
      <p class="subject">${subject}${shelfBadge(i.subject)}</p>${escalations}
      <p class="state">${state.join(" · ")}</p>${buttons(c.open, x)}
      <details class="members"${st.expanded.has(c.key) ? " open" : ""}>
        <summary>${c.members.length} related alerts (${openMembers} open)</summary>
        <ul>${items}</ul></details></article>`;
  }

  function card(v) {
    const a = v.alert, e = a.evidence || {}, x = a.actions || {};
    const id = titleId(v.alert_id);
    const subject = Object.entries(a.subject || {}).map(([k, val]) => esc(k) + ": " + esc(val)).join(" · ");
    const state = stateLine(x, v.open);
    return `<article aria-labelledby="${id}">
      <div class="top"><span class="badge">${esc(a.level.toUpperCase())} · ${ROMAN[a.level]}</span>
        <h3 id="${id}">${esc(a.title)}</h3>
        <span class="age" data-since="${esc(v.opened_at)}" title="opened ${esc(v.opened_at)}"></span></div>
      <p class="where">${esc(a.region_name)} · ${esc(a.stream)} / ${esc(a.detector)}</p>
      <p class="evidence">observed <strong>${fmtNum(e.observed)}</strong> vs expected ${fmtNum(e.expected)}
        · score ${fmtNum(e.score)} (threshold ${fmtNum(e.threshold)}) · window ${esc(e.window)}</p>
      <p class="subject">${subject}${shelfBadge(a.subject)}</p>
      <p class="state">${state.join(" · ")}</p>${buttons(v.open, x)}</article>`;
  }

  function ages() {
    const now = Date.now();
    for (const s of document.querySelectorAll(".age[data-since]")) {
      s.textContent = fmtAge(now - Date.parse(s.dataset.since));
    }
  }

  async function post(id, kind, act, body) {
    if (!token()) { showError("Type your command center's operator token first."); $("token").focus(); return false; }
    const path = kind === "incident" ? "/api/incidents/" : "/api/episodes/";
    const r = await fetch(path + encodeURIComponent(id) + "/" + act, {
      method: "POST",
      headers: { "Authorization": "Bearer " + token(), "Content-Type": "application/json" },
      body: JSON.stringify(body || {}),
    });
    let j = {};
    try { j = await r.json(); } catch (_) { /* empty body */ }
    if (r.status !== 202) { showError("Refused (" + r.status + "): " + (j.error || r.statusText)); return false; }
    showError("");
    if (j.episode) { st.episodes.set(j.episode.alert_id, j.episode); schedule(); }
    if (j.incident) { st.incidents.set(j.incident.incident_id, j.incident); schedule(); }
    announce(act === "ack" ? "Acknowledged." : act === "dispatch" ? "Dispatched." : "Closed.");
    return true;
  }

  function openDialog(id, kind, act) {
    const v = kind === "incident" ? st.incidents.get(id)?.incident : st.episodes.get(id)?.alert;
    st.dlg = { id, kind, act, opener: document.activeElement };
    $("dlg-title").textContent = act === "dispatch" ? "Dispatch" : kind === "incident" ? "Close incident" : "Close episode";
    $("dlg-sub").textContent = v ? v.title + " — " + v.region_name : id;
    $("note-l").hidden = act !== "dispatch";
    $("outcome-l").hidden = act !== "close";
    $("cnote-l").hidden = act !== "close";
    $("note").value = ""; $("cnote").value = "";
    $("dlg").showModal();
    (act === "dispatch" ? $("note") : $("outcome")).focus();
  }

  function onListClick(ev) {
    const b = ev.target.closest("button[data-act]");
    if (!b) return;
    const li = b.closest("li[data-kind]");
    if (b.dataset.act === "ack") post(li.dataset.id, li.dataset.kind, "ack");
    else openDialog(li.dataset.id, li.dataset.kind, b.dataset.act);
  }

  // Which incidents' member lists are unfolded, so a re-render keeps them so.
  function onToggle(ev) {
    const d = ev.target;
    if (!d.matches || !d.matches("details.members")) return;
    const key = d.closest("li[data-kind]").dataset.id;
    if (d.open) st.expanded.add(key); else st.expanded.delete(key);
  }

  async function loadNoise() {
    const r = await fetch("/api/noise", { headers: token() ? { Authorization: "Bearer " + token() } : {} });
    if (!r.ok) return;
    const j = await r.json();
    const rows = (xs, withDetectors) => xs.length ? xs.map((x) =>
      `<tr><td>${esc(x.name)}</td>${withDetectors ? `<td>${esc((x.detectors || []).join(", "))}</td>` : ""}<td class="num">${x.false_alarms}</td></tr>`).join("")
      : `<tr><td colspan="3" class="empty">none</td></tr>`;
    $("noise-detectors").innerHTML = rows(j.detectors, false);
    $("noise-keys").innerHTML = rows(j.keys, true);
  }

  // Shelving (issue #25): the shelves in force, polled (they change rarely, on any instance).
  async function loadShelves() {
    const r = await fetch("/api/shelves", { headers: token() ? { Authorization: "Bearer " + token() } : {} });
    if (!r.ok) return;
    st.shelves = (await r.json()).shelves || [];
    $("shelves-count").textContent = st.shelves.length ? "(" + st.shelves.length + ")" : "";
    $("shelves").innerHTML = st.shelves.length ? st.shelves.map((x) =>
      `<tr data-shelf="${esc(x.shelf_id)}"><td>${esc(x.scope)} ${esc(x.target)}</td>
        <td><span class="shelved">${x.kind === "out_of_service" ? "out of service" : "shelved"}</span></td>
        <td>${esc(x.reason)}</td><td>${esc(st.names[x.by_center] || x.by_center)}</td>
        <td title="${esc(x.until)}">${fmtTime(x.until)} (in ${fmtAge(Date.parse(x.until) - Date.now())})</td>
        <td><button type="button" data-unshelve="${esc(x.shelf_id)}">Unshelve</button></td></tr>`).join("")
      : `<tr><td colspan="6" class="empty">none</td></tr>`;
    schedule();
  }

  // The shelf that silences a subject now, if any: its point's, else its site's.
  function shelfOf(subject) {
    const s = subject || {};
    return st.shelves.find((x) => x.scope === "point" && x.target === s.sensor_id)
      || st.shelves.find((x) => x.scope === "site" && x.target === s.site_id);
  }

  function shelfBadge(subject) {
    const x = shelfOf(subject);
    return x ? ` <span class="shelved">${x.kind === "out_of_service" ? "out of service" : "shelved"} until ${fmtTime(x.until)}</span>` : "";
  }

  async function shelveRequest(method, path, body) {
    if (!token()) { showError("Type your command center's operator token first."); $("token").focus(); return; }
    const r = await fetch(path, {
      method, headers: { "Authorization": "Bearer " + token(), "Content-Type": "application/json" },
      body: body ? JSON.stringify(body) : undefined,
    });
    let j = {};
    try { j = await r.json(); } catch (_) { /* empty body */ }
    if (r.status !== 202) { showError("Refused (" + r.status + "): " + (j.error || r.statusText)); return; }
    showError("");
    announce(method === "DELETE" ? "Unshelved." : "Shelved.");
    await loadShelves();
  }

  function init() {
    initKpi();
    $("token").value = sessionStorage.getItem("rs.token") || "";
    $("token").addEventListener("change", () => {
      sessionStorage.setItem("rs.token", token());
      if (st.readToken) loadCenters().then(connect).catch((e) => setConn(e.message, "down"));
    });
    if (params.get("large") === "1" || localStorage.getItem("rs.large") === "1") toggleLarge(true);
    $("large").addEventListener("click", () => toggleLarge(!document.documentElement.classList.contains("large")));
    $("sound").addEventListener("click", () => {
      st.soundOn = !st.soundOn;
      if (st.soundOn && !st.audio) st.audio = new (window.AudioContext || window.webkitAudioContext)();
      $("sound").setAttribute("aria-pressed", String(st.soundOn));
      $("sound").textContent = "Sound: " + (st.soundOn ? "on" : "off");
      if (st.soundOn) beep();
    });
    $("center").addEventListener("change", connect);
    $("stream").addEventListener("change", schedule);
    for (const i of document.querySelectorAll('input[name="level"]')) i.addEventListener("change", schedule);
    $("open").addEventListener("click", onListClick);
    $("closed").addEventListener("click", onListClick);
    $("open").addEventListener("toggle", onToggle, true);
    $("closed").addEventListener("toggle", onToggle, true);
    $("noise-refresh").addEventListener("click", loadNoise);
    setInterval(loadNoise, 60000);
    $("shelve-form").addEventListener("submit", () => {
      const body = { [$("sh-scope").value]: $("sh-target").value.trim(), kind: $("sh-kind").value,
        reason: $("sh-reason").value, until: $("sh-until").value.trim() };
      shelveRequest("POST", "/api/shelve", body);
    });
    $("shelves").addEventListener("click", (ev) => {
      const b = ev.target.closest("button[data-unshelve]");
      if (b) shelveRequest("DELETE", "/api/shelve/" + encodeURIComponent(b.dataset.unshelve));
    });
    setInterval(loadShelves, 10000);
    $("dlg-cancel").addEventListener("click", () => $("dlg").close());
    $("dlg").addEventListener("close", () => { if (st.dlg && st.dlg.opener) st.dlg.opener.focus(); });
    $("dlg-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const { id, kind, act } = st.dlg;
      const body = act === "dispatch" ? { note: $("note").value } : { outcome: $("outcome").value, note: $("cnote").value };
      if (act === "dispatch" && !body.note.trim()) { $("note").focus(); return; }
      if (await post(id, kind, act, body)) { $("dlg").close(); if (act === "close") loadNoise(); }
    });
    setInterval(ages, 5000);
    // Closed episodes age out of the 24 h list without any message.
    setInterval(schedule, 60000);
    loadCenters().then(connect).then(loadNoise).then(loadShelves).catch((e) => { setConn("cannot load: " + e.message, "down"); });
  }

  // The alarm KPIs of the chosen center (/api/kpi): ISA-18.2's reference values mark
  // what is over them (about 1 alarm per 10 minutes is manageable, more than 10 a flood).
  async function loadKpi() {
    const c = $("center").value;
    if (!c) return;
    const r = await fetch("/api/kpi?center=" + encodeURIComponent(c), { headers: token() ? { Authorization: "Bearer " + token() } : {} });
    if (!r.ok) return;
    const j = await r.json();
    const ref = j.reference;
    const fig = (label, value, over) => `<div${over ? ' class="over"' : ""}><dt>${esc(label)}</dt><dd>${esc(value)}</dd></div>`;
    $("kpi-asof").textContent = j.as_of ? "event time " + fmtTime(j.as_of) : "";
    $("kpi-figures").innerHTML = [
      fig("alarms, last 10 min", j.rate_10m, j.rate_10m > ref.manageable_per_10m),
      fig("in flood now", j.in_flood ? "yes" : "no", j.in_flood),
      fig("floods", j.floods, j.floods > 0),
      fig("time in flood", fmtAge(j.flood_seconds * 1000), j.flood_seconds > 0),
      fig("chattering alarms", j.chatter, j.chatter > 0),
      fig("stale alarms", j.stale, j.stale > 0),
      fig("alarms since start", j.activations, false),
    ].join("");
    const none = (n) => `<tr><td colspan="${n}" class="empty">none</td></tr>`;
    $("kpi-bad").innerHTML = j.bad_actors.length ? j.bad_actors.map((x) =>
      `<tr><td>${esc(x.point)}</td><td>${esc(x.detector)}</td><td class="num">${x.activations}</td><td class="num">${x.chatter}</td></tr>`).join("") : none(4);
    $("kpi-chatter").innerHTML = j.chattering.length ? j.chattering.map((x) =>
      `<tr><td>${esc(x.point)}</td><td>${esc(x.detector)}</td><td class="num">${x.chatter}</td></tr>`).join("") : none(3);
    $("kpi-stale").innerHTML = j.stale_alarms.length ? j.stale_alarms.map((x) =>
      `<tr><td>${esc(x.title)}</td><td>${esc(x.level)}</td><td class="num">${fmtAge(x.open_s * 1000)}</td></tr>`).join("") : none(3);
  }

  function initKpi() {
    $("kpi-refresh").addEventListener("click", loadKpi);
    $("center").addEventListener("change", loadKpi);
    // The centers arrive asynchronously: load once the select has its options.
    new MutationObserver(loadKpi).observe($("center"), { childList: true });
    setInterval(loadKpi, 60000);
  }

  function toggleLarge(on) {
    document.documentElement.classList.toggle("large", on);
    $("large").setAttribute("aria-pressed", String(on));
    localStorage.setItem("rs.large", on ? "1" : "0");
  }

  init();
})();

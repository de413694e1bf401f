// pbxcontrol wallboard: logs in for a read-only token (scope=read) and renews it before it
// expires, follows /api/stream/calls/active/list/ (SPEC §8) opened with one-use tickets (no
// credential in a URL), and keeps a live table of the legs; or shows the board as it was at a
// chosen past moment (calls/active/list with `at`, SPEC §14), read-only and marked as the
// past, until "Back to live". No framework, no build step, nothing from another host.
"use strict";

(function () {
  const API = "/api/json/";
  const STREAM = "/api/stream/calls/active/list/";
  const STORE = "pbxcontrol.wallboard";
  const $ = (id) => document.getElementById(id);

  const state = {
    token: "",
    expires: 0, // Unix seconds, 0 = unknown
    renewAt: 0, // Unix seconds: when to ask for a fresh token
    renewing: false,
    generation: 0, // bumped by each stream (re)opening: a late ticket is for an old one
    me: null, // the calls/active/scopes answer
    names: new Map(), // customer id -> name
    scope: "",
    rows: new Map(), // "machine/uniqueid" -> row
    source: null,
    lastId: "",
    live: false,
    lastLive: 0, // Date.now() when last live, 0 = never
    retry: 0,
    renderQueued: false,
    quiet: true, // the next render shows a snapshot
    skew: 0, // server clock - our clock, seconds
    pending: null, // { kind, row }: the action being confirmed
    unrecorded: new Map(), // machine -> since (Unix seconds, 0 = not known yet), SPEC §12
    asking: false, // a calls/active/unrecorded request is under way
    at: null, // the past moment shown (Unix seconds); null: live
    pastSeq: 0, // the latest past-moment request (an older answer is dropped)
  };

  // -- the API -------------------------------------------------------------------------------

  async function call(path, params) {
    const body = new URLSearchParams(params);
    const resp = await fetch(API + path + "/", {
      method: "POST",
      body,
      cache: "no-store",
      credentials: "omit",
    });
    learnSkew(resp);
    const answer = await resp.json();
    const first = (answer.responses && answer.responses[0]) || {};
    return { code: String(first.code || resp.status), answer, message: messages(answer) };
  }

  function messages(answer) {
    return (answer.responses || [])
      .map((r) => (r.key ? r.key + ": " : "") + r.message)
      .join(" ");
  }

  function learnSkew(resp) {
    const date = Date.parse(resp.headers.get("Date") || "");
    if (!Number.isNaN(date)) {
      const skew = (date - Date.now()) / 1000;
      state.skew = Math.abs(skew) > 2 ? skew : 0;
    }
  }

  const now = () => Date.now() / 1000 + state.skew;

  // -- signing in ----------------------------------------------------------------------------

  function saveSession() {
    sessionStorage.setItem(
      STORE,
      JSON.stringify({ token: state.token, expires: state.expires, scope: state.scope })
    );
  }

  function loadSession() {
    try {
      return JSON.parse(sessionStorage.getItem(STORE) || "{}");
    } catch (_) {
      return {};
    }
  }

  function claims(token) {
    try {
      const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      return JSON.parse(atob(part)) || {};
    } catch (_) {
      return {};
    }
  }

  const tokenExpiry = (token) => Number(claims(token).exp) || 0;

  function planRenewal(token) {
    // A quarter of the lifetime before the end (at most 5 minutes): time to retry a few
    // times if the server is briefly away, so a screen runs for days on one sign-in.
    const { iat, exp } = claims(token);
    const lifetime = Number(exp) - Number(iat) || 3600;
    state.renewAt = state.expires - Math.min(300, lifetime / 4);
  }

  function tokenFromFragment() {
    const fragment = new URLSearchParams(location.hash.replace(/^#/, ""));
    const token = fragment.get("auth_token");
    if (token) {
      // Out of the address bar (and so out of bookmarks, history and screenshots).
      history.replaceState(null, "", location.pathname + location.search);
    }
    return token || "";
  }

  function showLogin(message) {
    stopStream();
    state.token = "";
    state.me = null;
    state.rows.clear();
    sessionStorage.removeItem(STORE);
    document.body.className = "signed-out";
    $("board").hidden = true;
    $("banner").hidden = true;
    $("unrecorded").hidden = true;
    state.unrecorded.clear();
    $("logout").hidden = true;
    $("who").textContent = "";
    $("scope").disabled = true;
    $("scope").replaceChildren();
    leavePast();
    $("past-form").hidden = true;
    setLive("signed-out");
    $("login").hidden = false;
    $("login-error").textContent = message || "";
    $("login-form").elements.auth_password.value = "";
    $("login-form").elements.auth_username.focus();
  }

  async function submitLogin(event) {
    event.preventDefault();
    const form = event.target;
    const button = $("login-button");
    $("login-error").textContent = "";
    button.disabled = true;
    try {
      const { code, answer, message } = await call("user/login", {
        auth_username: form.elements.auth_username.value,
        auth_password: form.elements.auth_password.value,
        token: "1",
        scope: "read", // a wallboard only watches: its token cannot hang up
      });
      if (code !== "200") {
        $("login-error").textContent = loginError(code, message);
        return;
      }
      form.elements.auth_password.value = "";
      await start(answer.data.auth_token, answer.data.auth_token_expires);
    } catch (err) {
      $("login-error").textContent = "The server did not answer (" + err.message + ").";
    } finally {
      button.disabled = false;
    }
  }

  function loginError(code, message) {
    if (code === "401") return "Wrong username or password, or the account is disabled.";
    if (code === "402") return "This person may not list calls. " + message;
    if (code === "429") return "Too many failed logins: wait a few minutes. " + message;
    return "Login failed (" + code + "): " + message;
  }

  async function start(token, expires) {
    state.token = token;
    state.expires = expires || tokenExpiry(token);
    planRenewal(token);
    // A token from the fragment may do more than read: trade it for a read-only one now.
    if (claims(token).scope !== "read") {
      await renew();
      if (!state.token) return; // refused: the login form is shown
      token = state.token;
    }
    const { code, answer, message } = await call("calls/active/scopes", { auth_token: token });
    if (code === "401") return showLogin("Your session has ended: log in again.");
    if (code !== "200") return showLogin(loginError(code, message));
    state.me = answer.data;
    state.names = new Map(state.me.customers.map((c) => [c.id, c.name]));
    const saved = loadSession();
    buildScopes(saved.token === token ? saved.scope : undefined);
    saveSession();
    $("login").hidden = true;
    $("board").hidden = false;
    $("logout").hidden = false;
    $("who").textContent = state.me.username + " · " + customerName(state.me.customer);
    document.body.className = "";
    if (!canAct()) document.body.classList.add("no-actions");
    $("past-form").hidden = false;
    $("past-at").value = localInput(now() - 60);
    openStream(false);
  }

  // Which buttons a person gets: the privileges calls/active/scopes reported (SPEC §9,
  // §11.1), on the live board only (a past moment is read-only). The API decides anyway.
  function may(kind) {
    if (state.at !== null || !state.me) return false;
    return ACTIONS[kind].needs.some((p) => state.me.privileges.includes(p));
  }

  const canAct = () => Object.keys(ACTIONS).some(may);

  // A fresh token of the same scope for the current one (user/login with auth_token and
  // token=1), then the stream moves to it quietly. True when renewed.
  async function renew() {
    if (state.renewing) return false;
    state.renewing = true;
    try {
      const { code, answer } = await call("user/login", {
        auth_token: state.token,
        token: "1",
        scope: "read",
      });
      if (code === "401") {
        showLogin("Your session has ended: log in again.");
        return false;
      }
      if (code !== "200") throw new Error("code " + code);
      state.token = answer.data.auth_token;
      state.expires = answer.data.auth_token_expires;
      planRenewal(state.token);
      saveSession();
      if (state.source) openStream(true, true);
      return true;
    } catch (_) {
      state.renewAt = now() + 5; // the server is away: try again soon, until the end
      return false;
    } finally {
      state.renewing = false;
    }
  }

  // -- scope ---------------------------------------------------------------------------------

  function scopeChoices() {
    const me = state.me;
    const own = customerName(me.customer);
    const choices = [];
    const below = me.customers.filter((c) => c.depth > 0);
    const parents = new Set(below.map((c) => c.parent));
    if (me.system) choices.push(["customer=system", "Whole system (every leg)"]);
    if (below.length) {
      choices.push(["recursive=1", own + " and all below"]);
      choices.push(["customer=recursive", "All customers below " + own]);
    }
    choices.push(["", own + " only"]);
    for (const c of below) {
      const indent = "\u2003".repeat(c.depth - 1);
      choices.push(["customer=" + c.id, indent + "\u25B8 " + c.name]);
      if (parents.has(c.id)) {
        choices.push(["customer=" + c.id + "&recursive=1", indent + "\u25B8 " + c.name + " and below"]);
      }
    }
    return choices;
  }

  function buildScopes(wanted) {
    const select = $("scope");
    const choices = scopeChoices();
    select.replaceChildren(
      ...choices.map(([value, label]) => {
        const option = document.createElement("option");
        option.value = value;
        option.textContent = label;
        return option;
      })
    );
    const values = choices.map((c) => c[0]);
    state.scope = values.includes(wanted) ? wanted : values[0];
    select.value = state.scope;
    select.disabled = choices.length < 2;
  }

  function changeScope() {
    state.scope = $("scope").value;
    saveSession();
    if (state.at !== null) {
      return showPast(state.at).catch((err) => toast("The server did not answer (" + err.message + ").", true));
    }
    state.rows.clear();
    render();
    openStream(false);
  }

  // -- a past moment -------------------------------------------------------------------------

  async function submitPast(event) {
    event.preventDefault();
    // datetime-local is the browser's local time, which Date reads it as.
    const at = new Date($("past-at").value).getTime() / 1000;
    if (Number.isNaN(at)) return toast("Choose a date and a time.", true);
    try {
      await showPast(at);
    } catch (err) {
      toast("The server did not answer (" + err.message + ").", true);
    }
  }

  async function showPast(at) {
    const asked = ++state.pastSeq;
    const params = Object.fromEntries(new URLSearchParams(state.scope));
    const { code, answer, message } = await call("calls/active/list", {
      ...params,
      auth_token: state.token,
      names: "1",
      at: String(at),
    });
    if (asked !== state.pastSeq) return; // another moment, or back to live, since
    if (code === "401") return showLogin("Your session has ended: log in again.");
    if (code !== "200") return toast("That moment cannot be shown. " + message, true);
    stopStream();
    state.at = at;
    state.rows = new Map(answer.data.map((r) => [key(r), r]));
    state.quiet = true;
    document.body.classList.add("past");
    setLive("past");
    $("past-banner").hidden = false;
    $("past-text").textContent =
      "The board as it was at " + moment(at) + ": read-only, durations counted to then.";
    render();
    tickClock();
  }

  function leavePast() {
    state.pastSeq += 1;
    state.at = null;
    document.body.classList.remove("past");
    $("past-banner").hidden = true;
  }

  function backToLive() {
    leavePast();
    state.rows.clear();
    render();
    tickClock();
    openStream(false);
  }

  function moment(at) {
    return new Date(at * 1000).toLocaleString([], {
      weekday: "short",
      year: "numeric",
      month: "short",
      day: "numeric",
      hour: "2-digit",
      minute: "2-digit",
      second: "2-digit",
      hour12: false,
    });
  }

  function localInput(seconds) {
    const d = new Date(seconds * 1000);
    const pad = (n) => String(n).padStart(2, "0");
    return (
      d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + "T" +
      pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds())
    );
  }

  // -- the stream ----------------------------------------------------------------------------

  // The stream's URL: the scope and a one-use ticket (stream/ticket), never the token or a
  // password, which a proxy's access log would keep. "" when no ticket could be had (then
  // `retryIn` or the login form has been shown).
  async function streamUrl(resume) {
    let got;
    try {
      got = await call("stream/ticket", { auth_token: state.token });
    } catch (_) {
      retryIn(2000, "The server does not answer.");
      return "";
    }
    if (got.code === "401") {
      showLogin("Your session has ended: log in again.");
      return "";
    }
    if (got.code !== "200") {
      retryIn(5000, "The server answered " + got.code + ". " + got.message);
      return "";
    }
    const params = new URLSearchParams(state.scope);
    params.set("ticket", got.answer.data.ticket);
    params.set("names", "1");
    if (resume && state.lastId) params.set("last_event_id", state.lastId);
    return STREAM + "?" + params.toString();
  }

  function stopStream() {
    state.generation += 1;
    if (state.source) state.source.close();
    state.source = null;
    clearTimeout(state.retry);
  }

  // `quiet`: moving a live stream to a new ticket (after a token renewal), not a loss: the
  // board stays "Live"; the new stream resumes where the old one was.
  async function openStream(resume, quiet) {
    stopStream();
    const generation = state.generation;
    if (!resume) state.lastId = "";
    if (!quiet) setLive(false);
    const url = await streamUrl(resume);
    if (!url || generation !== state.generation) return;
    const source = new EventSource(url);
    state.source = source;
    source.onopen = () => {
      source.opened = true;
      setLive(true);
    };
    source.onerror = () => {
      if (state.source !== source) return;
      // EventSource would retry by itself with the same URL, but its ticket is used up:
      // reconnect with a new one. A stream that was open resumes at once; one that never
      // opened was answered with the JSON envelope: find out what.
      const opened = source.opened;
      stopStream();
      setLive(false);
      if (opened) openStream(true);
      else diagnose();
    };
    source.addEventListener("snapshot", (e) => {
      const rows = JSON.parse(e.data).data;
      state.rows = new Map(rows.map((r) => [key(r), r]));
      state.quiet = true; // a snapshot's rows are not news: no flash
      seen(e);
    });
    source.addEventListener("upsert", (e) => {
      const row = JSON.parse(e.data);
      state.rows.set(key(row), row);
      seen(e);
    });
    source.addEventListener("remove", (e) => {
      state.rows.delete(key(JSON.parse(e.data)));
      seen(e);
    });
  }

  function seen(event) {
    if (event.lastEventId) state.lastId = event.lastEventId;
    if (!state.live) setLive(true);
    queueRender();
  }

  async function diagnose() {
    if (state.at !== null) return;
    const generation = state.generation;
    const url = await streamUrl(true);
    if (!url || generation !== state.generation) return;
    const abort = new AbortController();
    let resp;
    try {
      resp = await fetch(url, { signal: abort.signal, cache: "no-store", credentials: "omit" });
    } catch (_) {
      return retryIn(2000, "The server does not answer.");
    }
    const type = resp.headers.get("Content-Type") || "";
    if (type.includes("text/event-stream")) {
      abort.abort();
      return retryIn(0, "");
    }
    if (!type.includes("json")) {
      abort.abort();
      return retryIn(5000, "The server answered HTTP " + resp.status + ".");
    }
    const answer = await resp.json().catch(() => ({}));
    const first = (answer.responses && answer.responses[0]) || {};
    const code = String(first.code || "");
    const text = messages(answer);
    // The stream refused its ticket (a slow network let it expire) or its person: the next
    // ticket's request tells which (a 401 there is the login form).
    if (code === "401") return retryIn(2000, text);
    if (code === "402") return fatal("This person may not list these calls. " + text);
    if (code === "400") return fatal("The server refused this scope: " + text);
    if (code === "429") return retryIn(30000, "Too many open streams for this person. " + text);
    return retryIn(5000, "The server answered " + (code || resp.status) + ". " + text);
  }

  function retryIn(ms, why) {
    stopStream();
    if (state.at !== null) return;
    setLive(false, why);
    state.retry = setTimeout(() => state.token && state.at === null && openStream(true), ms);
  }

  function fatal(why) {
    stopStream();
    setLive(false, why + " Choose another scope, or log in as someone else.");
  }

  function setLive(live, why) {
    const indicator = $("live");
    const signedOut = live === "signed-out";
    const past = live === "past"; // marked by its own banner, not as an outage
    state.live = live === true;
    if (state.live) state.lastLive = Date.now();
    const look = past ? "past" : state.live ? "on" : state.lastLive ? "off" : "connecting";
    indicator.className = "live " + look;
    $("live-text").textContent = past
      ? "Past"
      : state.live
        ? "Live"
        : signedOut
          ? "Signed out"
          : "Not live";
    document.body.classList.toggle("stale", !state.live && !signedOut && !past);
    $("banner").hidden = state.live || signedOut || past;
    state.why = why || "";
    tickBanner();
  }

  function tickBanner() {
    if ($("banner").hidden) return;
    const since = state.lastLive
      ? "last live " + clockDuration((Date.now() - state.lastLive) / 1000) + " ago"
      : "not connected yet";
    const why = state.why || "Reconnecting to the server…";
    $("banner-text").textContent = why + " — " + since + ".";
  }

  // -- the table -----------------------------------------------------------------------------

  const key = (row) => row.machine + "/" + row.uniqueid;

  function queueRender() {
    if (state.renderQueued) return;
    state.renderQueued = true;
    setTimeout(render, 0);
  }

  function ordered() {
    // Legs of a call stay together, calls by their first leg's start: a row never jumps.
    const calls = new Map();
    for (const row of state.rows.values()) {
      const id = row.machine + "/" + row.callid;
      const first = calls.get(id);
      if (first === undefined || row.start < first) calls.set(id, row.start);
    }
    const cmp = (a, b) => (a < b ? -1 : a > b ? 1 : 0);
    return [...state.rows.values()].sort((a, b) => {
      const ca = a.machine + "/" + a.callid;
      const cb = b.machine + "/" + b.callid;
      return (
        calls.get(ca) - calls.get(cb) ||
        cmp(ca, cb) ||
        a.start - b.start ||
        cmp(a.uniqueid, b.uniqueid)
      );
    });
  }

  function render() {
    state.renderQueued = false;
    const tbody = $("rows");
    const existing = new Map([...tbody.children].map((tr) => [tr.dataset.key, tr]));
    const rows = ordered();
    const calls = callStates(rows);
    let previousCall = null;
    rows.forEach((row, index) => {
      const callKey = row.machine + "/" + row.callid;
      const first = callKey !== previousCall;
      previousCall = callKey;
      let tr = existing.get(key(row));
      if (tr === undefined) {
        tr = document.createElement("tr");
        tr.dataset.key = key(row);
        if (!state.quiet) {
          tr.classList.add("fresh");
          setTimeout(() => tr.classList.remove("fresh"), 1600);
        }
      }
      existing.delete(key(row));
      fillRow(tr, row, first ? calls.get(callKey) : null);
      if (tbody.children[index] !== tr) tbody.insertBefore(tr, tbody.children[index] || null);
    });
    for (const tr of existing.values()) tr.remove();
    state.quiet = false;
    $("empty").hidden = rows.length > 0;
    totals(rows);
    perCustomer(rows);
    unrecordedMachines(rows);
  }

  // Per call: whether one of its legs is being recorded (and paused), for its buttons.
  function callStates(rows) {
    const calls = new Map();
    for (const row of rows) {
      const callKey = row.machine + "/" + row.callid;
      const call = calls.get(callKey) || { recording: false, paused: false };
      if (row.recording) {
        call.recording = true;
        call.paused = call.paused || row.recording_paused === 1;
      }
      calls.set(callKey, call);
    }
    return calls;
  }

  // -- machines nobody records (SPEC §12) ----------------------------------------------------

  function unrecordedMachines(rows) {
    // The machines of the rows flagged recorded: 0; since when comes from the server. A past
    // moment's rows say what was recorded then: no banner about now over them.
    const flagged = state.at === null ? rows.filter((r) => r.recorded === 0) : [];
    const now = new Set(flagged.map((r) => r.machine));
    for (const machine of [...state.unrecorded.keys()]) {
      if (!now.has(machine)) state.unrecorded.delete(machine);
    }
    let unknown = false;
    for (const machine of now) {
      if (!state.unrecorded.has(machine)) state.unrecorded.set(machine, 0);
      unknown = unknown || !state.unrecorded.get(machine);
    }
    if (unknown) askSince();
    showUnrecorded();
  }

  async function askSince() {
    if (state.asking || !state.token) return;
    state.asking = true;
    try {
      const { code, answer } = await call("calls/active/unrecorded", { auth_token: state.token });
      if (code === "200") {
        for (const entry of answer.data) {
          if (state.unrecorded.has(entry.machine)) state.unrecorded.set(entry.machine, entry.since);
        }
      }
    } catch (_) {
      // Shown without its time; asked again with the next change.
    } finally {
      state.asking = false;
    }
    showUnrecorded();
  }

  function showUnrecorded() {
    const machines = [...state.unrecorded.keys()].sort((a, b) => a - b);
    const banner = $("unrecorded");
    banner.hidden = machines.length === 0;
    if (banner.hidden) return;
    const parts = machines.map((m) => {
      const since = state.unrecorded.get(m);
      if (!since) return "machine " + m;
      const at = new Date(since * 1000).toLocaleString([], { hour12: false });
      return "machine " + m + " since " + at;
    });
    const one = parts.length === 1;
    $("unrecorded-text").textContent =
      "Nobody records " + parts.join(", ") + ": " + (one ? "its" : "their") +
      " calls are greyed and may have ended.";
  }

  // `call`: the call's state when this is its first row (which carries its buttons), else null.
  function fillRow(tr, row, call) {
    const first = call !== null;
    const signature = JSON.stringify(row) + JSON.stringify(call) + canAct();
    if (tr.dataset.signature === signature) return;
    tr.dataset.signature = signature;
    tr.dataset.uniqueid = row.uniqueid;
    tr.dataset.machine = row.machine;
    tr.dataset.callid = row.callid;
    const ringing = !row.answered && /^ring/i.test(row.status);
    tr.className = [
      "dir-" + (row.direction || "none"),
      first ? "call-first" : "leg-more",
      ringing ? "is-ringing" : "",
      row.recorded === 0 ? "unrecorded" : "",
      tr.classList.contains("fresh") ? "fresh" : "",
    ].join(" ");
    tr.title = row.recorded === 0 ? "Machine " + row.machine + " is not recorded: this call may have ended." : "";
    const cells = [
      cell("c-duration", span("duration", "")),
      cell("c-dir", pill(row.direction)),
      cell("", number(row.snumber, row.snumber_name)),
      cell("", number(row.cnumber, row.cnumber_name)),
      cell("", number(row.dnumber, row.dnumber_name)),
      cell("", status(row, ringing)),
      cell("customer", customers(row)),
      cell("c-machine", document.createTextNode(String(row.machine))),
      cell("c-action", first ? actionButtons(row, call) : document.createTextNode("")),
    ];
    tr.replaceChildren(...cells);
    tickRow(tr, row);
  }

  function cell(cls, child) {
    const td = document.createElement("td");
    if (cls) td.className = cls;
    td.append(child);
    return td;
  }

  function span(cls, text) {
    const s = document.createElement("span");
    s.className = cls;
    s.textContent = text;
    return s;
  }

  function pill(direction) {
    const label = { in: "IN", out: "OUT", internal: "INT" }[direction] || "—";
    return span("pill dir-" + (direction || "none"), label);
  }

  function number(num, name) {
    const box = document.createDocumentFragment();
    box.append(num ? span("num", num) : span("num none", "—"));
    if (name) box.append(span("name", name));
    return box;
  }

  // The leg's state, and what is done to it: recorded (paused), monitored (SPEC §11.8).
  function status(row, ringing) {
    const text = row.status;
    const cls = ringing ? "status-ringing" : text === "Up" ? "status-up" : "status-other";
    const box = document.createDocumentFragment();
    box.append(span("status " + cls, text || "—"));
    if (row.recording) {
      const paused = row.recording_paused === 1;
      const badge = span("badge rec" + (paused ? " paused" : ""), paused ? "REC paused" : "REC");
      badge.title = row.recording;
      box.append(badge);
    }
    if (row.monitor) box.append(span("badge mon", row.monitor.toUpperCase()));
    return box;
  }

  function customerName(id) {
    if (!id) return "—";
    return state.names.get(id) || "#" + id;
  }

  function customers(row) {
    const box = document.createDocumentFragment();
    const ids = [row.scustomer, row.dcustomer].filter((id, i, all) => id && all.indexOf(id) === i);
    if (!ids.length) return span("none", "—");
    ids.forEach((id, i) => {
      if (i) box.append(span("arrow", "→"));
      box.append(document.createTextNode(customerName(id)));
    });
    return box;
  }

  // Per call (its first row), the buttons the person's privileges allow: redirect; record, or
  // pause/resume and stop a recording; monitor; hang up. Each opens a confirmation that asks
  // for the person's password (the board's own token only reads).
  function actionButtons(row, call) {
    const box = document.createElement("div");
    box.className = "actions";
    const recording = !call.recording ? ["record"] : [call.paused ? "resume" : "pause", "stop"];
    for (const kind of ["redirect", ...recording, "monitor", "hangup"]) {
      if (may(kind)) box.append(actionButton(kind, row));
    }
    return box;
  }

  function actionButton(kind, row) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = kind === "hangup" ? "hangup" : "action " + kind;
    button.textContent = ACTIONS[kind].label;
    button.addEventListener("click", () => confirmAction(kind, row));
    return button;
  }

  function tickRow(tr, row) {
    const since = row.answered || row.start;
    const until = state.at === null ? now() : state.at;
    tr.querySelector(".duration").textContent = clockDuration(until - since);
  }

  function clockDuration(seconds) {
    const s = Math.max(0, Math.floor(seconds));
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    const pad = (n) => String(n).padStart(2, "0");
    return (h ? h + ":" + pad(m) : String(m)) + ":" + pad(s % 60);
  }

  function totals(rows) {
    const calls = new Set(rows.map((r) => r.machine + "/" + r.callid));
    const count = (pred) => rows.filter(pred).length;
    $("t-calls").textContent = calls.size;
    $("t-legs").textContent = rows.length;
    $("t-in").textContent = count((r) => r.direction === "in");
    $("t-out").textContent = count((r) => r.direction === "out");
    $("t-internal").textContent = count((r) => r.direction === "internal");
    $("t-ringing").textContent = count((r) => !r.answered && /^ring/i.test(r.status));
  }

  function perCustomer(rows) {
    const by = new Map();
    for (const row of rows) {
      const ids = new Set([row.scustomer, row.dcustomer].filter(Boolean));
      if (!ids.size) ids.add(0);
      for (const id of ids) {
        const entry = by.get(id) || { calls: new Set(), legs: 0 };
        entry.calls.add(row.machine + "/" + row.callid);
        entry.legs += 1;
        by.set(id, entry);
      }
    }
    const entries = [...by.entries()].sort(
      (a, b) => b[1].calls.size - a[1].calls.size || (customerName(a[0]) < customerName(b[0]) ? -1 : 1)
    );
    const most = Math.max(1, ...entries.map(([, e]) => e.legs));
    $("customers").replaceChildren(
      ...entries.map(([id, entry]) => {
        const tr = document.createElement("tr");
        tr.dataset.customer = id;
        const name = span("cname", id ? customerName(id) : "No customer");
        const bar = span("bar", "");
        bar.style.width = Math.round((100 * entry.legs) / most) + "%";
        const first = document.createElement("td");
        first.append(name, bar);
        tr.append(first, cell("count", document.createTextNode(entry.calls.size)));
        tr.append(cell("count", document.createTextNode(entry.legs)));
        return tr;
      })
    );
    $("customers-empty").hidden = entries.length > 0;
  }

  // -- actions: hang-up, redirect, recording, monitoring (SPEC §9, §11) ----------------------

  // SPEC §9, §11.1: `actions` acts on any call the person sees, `panel` on calls of its own
  // lines (the API checks which); `monitor` is a privilege of its own.
  const RECORDS = ["actions", "panel"];
  const ACTIONS = {
    redirect: {
      needs: RECORDS, label: "Redirect", path: "calls/redirect", ok: "Redirect",
      title: "Redirect this call?",
      hint: "The chosen side leaves the call and is sent to the number; the other side is released.",
      fields: ["number", "side"],
    },
    record: {
      needs: RECORDS, label: "Record", path: "recording/recordings/start", ok: "Record",
      title: "Record this call?",
      hint: "Both directions are recorded until you stop it or the call ends.",
    },
    resume: {
      needs: RECORDS, label: "Resume rec", path: "recording/recordings/start", ok: "Resume",
      title: "Resume recording this call?",
      hint: "The paused recording goes on in the same file.",
    },
    pause: {
      needs: RECORDS, label: "Pause rec", path: "recording/recordings/pause", ok: "Pause",
      title: "Pause the recording?",
      hint: "Nothing is recorded until you resume it; what was recorded is kept.",
    },
    stop: {
      needs: RECORDS, label: "Stop rec", path: "recording/recordings/stop", ok: "Stop recording",
      title: "Stop recording this call?",
      hint: "The recording ends and is kept.",
    },
    monitor: {
      needs: ["monitor"], label: "Monitor", path: "calls/monitor", ok: "Call my phone",
      title: "Monitor this call?",
      hint: "Your phone rings; answer it to listen, whisper or barge in. Hang up to end.",
      fields: ["mode", "phone", "side"],
    },
    hangup: {
      needs: RECORDS, label: "Hang up", path: "calls/hangup", ok: "Hang up",
      title: "Hang up this call?",
      hint: "Every leg of the call is ended. This cannot be undone.",
    },
  };
  const FIELDS = ["number", "side", "mode", "phone"];
  const PHONE = "pbxcontrol.wallboard.phone"; // the supervisor's phone: a number, no secret

  function confirmAction(kind, row) {
    const action = ACTIONS[kind];
    const legs = [...state.rows.values()].filter(
      (r) => r.callid === row.callid && r.machine === row.machine
    );
    const from = party(row.snumber, row.snumber_name);
    const to = party(row.dnumber || row.cnumber, row.dnumber_name);
    state.pending = { kind, row };
    $("confirm-title").textContent = action.title;
    $("confirm-hint").textContent = action.hint;
    $("confirm-hangup").textContent = action.ok;
    $("confirm-hangup").className = kind === "hangup" ? "danger" : "primary";
    for (const field of FIELDS) {
      $("confirm-" + field + "-label").hidden = !(action.fields || []).includes(field);
    }
    $("confirm-number").value = "";
    $("confirm-mode").value = "listen";
    $("confirm-phone").value = localStorage.getItem(PHONE) || "";
    $("confirm-side").options[0].textContent = "Calling side: " + from;
    $("confirm-side").options[1].textContent = "Called side: " + to;
    $("confirm-side").value = "1";
    $("confirm-password").value = "";
    $("confirm-text").textContent =
      "From " + from + " to " + to + ", " + legs.length + (legs.length === 1 ? " leg" : " legs") +
      ", " + clockDuration(now() - (row.answered || row.start)) + ".";
    $("confirm").showModal();
    const first = (action.fields || []).find((f) => f !== "side" && f !== "mode");
    $(first === "number" || (first === "phone" && !$("confirm-phone").value) ? "confirm-" + first
      : "confirm-password").focus();
  }

  const party = (num, name) => (num || "unknown") + (name ? " (" + name + ")" : "");

  // The request's parameters: the call is named by its calling leg (callid), the side by
  // `channel` (SPEC §11.1), in the body of a POST like every call of this page.
  function params(kind, row, form) {
    if (kind === "hangup") return { callid: row.callid };
    const leg = { uniqueid: row.callid, machine: String(row.machine) };
    if (kind === "redirect") return { ...leg, channel: form.side, cnumber: form.number };
    if (kind === "monitor") return { ...leg, channel: form.side, mode: form.mode, phone: form.phone };
    return leg;
  }

  function done(kind, code, form) {
    if (kind === "monitor") {
      const what = { listen: "listen", whisper: "whisper", barge: "barge in" }[form.mode];
      return code === "200"
        ? "Calling your phone " + form.phone + ": answer it to " + what + "."
        : "Now " + form.mode + " on this call.";
    }
    return {
      hangup: "Call hung up.",
      redirect: "Redirected to " + form.number + ".",
      record: "Recording started.",
      resume: "Recording resumed.",
      pause: "Recording paused.",
      stop: "Recording stopped.",
    }[kind];
  }

  // A refusal says why, with the API's own message (SPEC §11.1's codes): never silent.
  function refused(code, message) {
    const why = {
      400: "Check the form:",
      401: "Wrong password: nothing was done.",
      402: "You may not do this:",
      403: "The customer's policy does not allow this:",
      404: "That call has ended, or you may not see it:",
      409: "Not possible now:",
      429: "Too many actions: wait a minute.",
      503: "The call's machine did not carry it out:",
    }[code];
    return (why || "Failed (" + code + "):") + " " + message;
  }

  async function closeConfirm() {
    const pending = state.pending;
    const password = $("confirm-password").value;
    const form = {
      number: $("confirm-number").value.trim(),
      side: $("confirm-side").value,
      mode: $("confirm-mode").value,
      phone: $("confirm-phone").value.trim(),
    };
    $("confirm-password").value = "";
    state.pending = null;
    if ($("confirm").returnValue !== "hangup" || !pending) return;
    const { kind, row } = pending;
    if (kind === "monitor" && form.phone) localStorage.setItem(PHONE, form.phone);
    try {
      // The board's token may only read (scope=read): an action is confirmed with the
      // password, sent in this request's body and kept nowhere.
      const { code, message } = await call(ACTIONS[kind].path, {
        auth_username: state.me.username,
        auth_password: password,
        ...params(kind, row, form),
      });
      if (code === "204" || code === "200") toast(done(kind, code, form), false);
      else toast(refused(code, message), true);
    } catch (err) {
      toast("The server did not answer (" + err.message + ").", true);
    }
  }

  function toast(text, bad) {
    const box = $("toast");
    box.textContent = text;
    box.classList.toggle("bad", bad);
    box.hidden = false;
    clearTimeout(state.toastTimer);
    state.toastTimer = setTimeout(() => (box.hidden = true), 5000);
  }

  // -- every second --------------------------------------------------------------------------

  function tickClock() {
    // In the past, the clock shows the moment shown, not the time now.
    $("clock").textContent =
      state.at === null
        ? new Date(Date.now() + state.skew * 1000).toLocaleTimeString([], { hour12: false })
        : moment(state.at);
  }

  function tick() {
    tickClock();
    for (const tr of $("rows").children) {
      const row = state.rows.get(tr.dataset.key);
      if (row) tickRow(tr, row);
    }
    tickBanner();
    if (state.token && state.expires && now() > state.expires) {
      showLogin("Your session has expired: log in again.");
    } else if (state.token && state.me && state.renewAt && now() > state.renewAt) {
      renew();
    }
    setTimeout(tick, 1000 - (Date.now() % 1000) + 5);
  }

  // -- start ---------------------------------------------------------------------------------

  function logout() {
    // Revoked on the server too (every process and host), not only forgotten here.
    const token = state.token;
    showLogin("");
    if (token) call("user/logout", { auth_token: token }).catch(() => {});
  }

  function offline(err) {
    showLogin("The server did not answer (" + err.message + ").");
  }

  function boot() {
    $("login-form").addEventListener("submit", submitLogin);
    $("scope").addEventListener("change", changeScope);
    $("past-form").addEventListener("submit", submitPast);
    $("back-live").addEventListener("click", backToLive);
    $("logout").addEventListener("click", logout);
    $("confirm").addEventListener("close", closeConfirm);
    for (const input of $("confirm").querySelectorAll("input")) {
      input.addEventListener("keydown", (e) => {
        // Enter confirms (the form's first button, which Enter would press, is Cancel).
        if (e.key === "Enter") {
          e.preventDefault();
          $("confirm").close("hangup");
        }
      });
    }
    // A wallboard URL pasted into a tab that shows this page only changes the fragment.
    window.addEventListener("hashchange", () => {
      const token = tokenFromFragment();
      if (token) start(token, tokenExpiry(token)).catch(offline);
    });
    tick();
    const fromFragment = tokenFromFragment();
    const saved = loadSession();
    const token = fromFragment || saved.token;
    const expires = fromFragment ? tokenExpiry(fromFragment) : saved.expires;
    if (token && (!expires || expires > Date.now() / 1000)) {
      start(token, expires).catch(offline);
    } else {
      showLogin("");
    }
  }

  boot();
})();

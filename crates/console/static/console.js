// tenant-plane console: live tenant updates over server-sent events.
// Everything else works without this script; it only keeps the status of
// the tenants on screen (and the counts) current without a reload.
// Text from the server is only ever set with textContent, never as HTML.
"use strict";

(function () {
  const table = document.getElementById("tenants");
  const watched = document.querySelector("[data-tenant-id]");
  if (!table && !watched) return;
  if (typeof EventSource === "undefined") return;

  const liveState = document.getElementById("live-state");
  function say(text) {
    if (!liveState) return;
    liveState.textContent = text;
    liveState.hidden = false;
  }

  function setField(scope, field, value) {
    scope.querySelectorAll('[data-field="' + field + '"]').forEach(function (el) {
      el.textContent = value === null || value === undefined ? "" : String(value);
      if (field === "status") {
        el.className = el.className.replace(/\bstatus-[a-z]+\b/g, "").trim() + " status-" + value;
      }
    });
  }

  function cell(text, extra) {
    const td = document.createElement("td");
    if (extra) extra(td, text);
    else td.textContent = text || "";
    return td;
  }

  function insertRow(t) {
    if (!table || table.dataset.liveInsert !== "1") return;
    const filter = table.dataset.statusFilter;
    if (filter && filter !== t.status) return;
    const tr = document.createElement("tr");
    tr.dataset.tenantId = t.id;
    tr.appendChild(cell(t.org, function (td, text) {
      const a = document.createElement("a");
      a.href = "/console/tenants/" + encodeURIComponent(t.id);
      const code = document.createElement("code");
      code.textContent = text;
      a.appendChild(code);
      td.appendChild(a);
    }));
    tr.appendChild(cell(t.name, function (td, text) {
      td.className = "name";
      const bdi = document.createElement("bdi");
      bdi.textContent = text;
      td.appendChild(bdi);
    }));
    tr.appendChild(cell(t.slug, function (td, text) {
      td.className = "wide";
      const bdi = document.createElement("bdi");
      bdi.textContent = text || "";
      td.appendChild(bdi);
    }));
    tr.appendChild(cell(t.status, function (td) {
      const span = document.createElement("span");
      span.className = "badge";
      span.dataset.field = "status";
      td.appendChild(span);
    }));
    [
      ["desired", t.desired],
      ["host", t.host],
      ["attempts", String(t.attempts)],
      [null, "just now"],
    ].forEach(function (pair) {
      const td = cell(pair[1]);
      td.className = "wide";
      if (pair[0]) td.dataset.field = pair[0];
      tr.appendChild(td);
    });
    setField(tr, "status", t.status);
    const body = table.tBodies[0];
    body.insertBefore(tr, body.firstChild);
    const empty = document.getElementById("no-tenants");
    if (empty) empty.remove();
  }

  // From when the page was rendered: the stream first sends what changed
  // since, so nothing between rendering and listening is missed.
  const rendered = (table || watched).getAttribute("data-rendered-at");
  const url = "/console/events" + (rendered ? "?since=" + encodeURIComponent(rendered) : "");
  let source;
  function connect() {
    source = new EventSource(url);
    source.addEventListener("open", function () {
      say("Live updates on");
    });
    source.addEventListener("error", function () {
      say("Live updates paused; reconnecting…");
      // The browser retries a dropped connection by itself, but gives up
      // on an error answer (the database was briefly unavailable, say).
      if (source.readyState === EventSource.CLOSED) {
        setTimeout(connect, 10000);
      }
    });
    listen(source);
  }

  function listen(source) {
    source.addEventListener("tenant", function (e) {
      let t;
      try {
        t = JSON.parse(e.data);
      } catch (_) {
        return;
      }
      const rows = document.querySelectorAll('[data-tenant-id="' + CSS.escape(t.id) + '"]');
      if (rows.length === 0) {
        insertRow(t);
        return;
      }
      rows.forEach(function (scope) {
        setField(scope, "status", t.status);
        setField(scope, "desired", t.desired);
        setField(scope, "attempts", t.attempts);
        setField(scope, "host", t.host);
      });
    });
    source.addEventListener("counts", function (e) {
      let counts;
      try {
        counts = JSON.parse(e.data);
      } catch (_) {
        return;
      }
      let total = 0;
      Object.keys(counts).forEach(function (status) {
        total += counts[status];
        const el = document.querySelector('[data-count="' + CSS.escape(status) + '"]');
        if (el) el.textContent = String(counts[status]);
      });
      const all = document.getElementById("count-all");
      if (all) all.textContent = String(total);
    });
    source.addEventListener("resync", function () {
      say("Live updates resumed; some changes may have been missed: reload to catch up");
    });
  }

  connect();
})();

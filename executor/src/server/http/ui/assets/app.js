// The runs pages' script: live parts replaced from server-sent events,
// running durations ticking, copy buttons, and the job log viewer (ANSI
// colours, line links, only the lines in view in the page, so a log of
// 100,000 lines stays responsive). No framework, no build step.
(function () {
  "use strict";

  var serverNow = Number(document.body.getAttribute("data-now")) || Date.now();
  var skew = serverNow - Date.now();

  function duration(ms) {
    ms = Math.max(0, ms);
    var s = Math.floor(ms / 1000);
    function two(n) { return (n < 10 ? "0" : "") + n; }
    if (s >= 3600) return Math.floor(s / 3600) + "h " + two(Math.floor(s % 3600 / 60)) + "m " + two(s % 60) + "s";
    if (s >= 60) return Math.floor(s / 60) + "m " + two(s % 60) + "s";
    return s + "." + Math.floor(ms % 1000 / 100) + "s";
  }

  function tick() {
    var now = Date.now() + skew;
    document.querySelectorAll("[data-since]").forEach(function (el) {
      el.textContent = duration(now - Number(el.getAttribute("data-since")));
    });
  }
  tick();
  setInterval(tick, 1000);

  // `root`'s HTML as the browser writes it, the ticking times left out.
  function shape(root) {
    var copy = root.cloneNode(true);
    copy.querySelectorAll("[data-since]").forEach(function (el) { el.textContent = ""; });
    return copy.innerHTML;
  }

  // A part of the page replaced by each `update` event that changes it
  // (the first repeats the page: replacing it would only lose the focus);
  // `end` is its last.
  function live(el) {
    var source = new EventSource(el.getAttribute("data-live"));
    function put(html) {
      var next = el.cloneNode(false);
      next.innerHTML = html;
      if (shape(next) === shape(el)) return;
      el.innerHTML = html;
      tick();
    }
    source.addEventListener("update", function (e) { put(e.data); });
    source.addEventListener("end", function (e) {
      if (e.data) put(e.data);
      source.close();
    });
  }

  document.addEventListener("click", function (e) {
    var button = e.target.closest && e.target.closest("button.copy");
    if (!button) return;
    var text = button.getAttribute("data-copy");
    function done() {
      button.textContent = "Copied";
      setTimeout(function () { button.textContent = "Copy"; }, 2000);
    }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, fallback);
    } else {
      fallback();
    }
    function fallback() {
      var area = document.createElement("textarea");
      area.value = text;
      area.setAttribute("readonly", "");
      area.style.position = "absolute";
      area.style.left = "-9999px";
      document.body.appendChild(area);
      area.select();
      try { document.execCommand("copy"); done(); } finally { area.remove(); }
    }
  });

  // ANSI SGR state: {f, g: 0-15 or a CSS colour, b, d, i, u, v}.
  function sgr(state, params) {
    var s = Object.assign({}, state || {});
    var codes = params === "" ? [0] : params.split(";").map(function (p) { return p === "" ? 0 : Number(p); });
    for (var k = 0; k < codes.length; k++) {
      var c = codes[k];
      if (c === 0) s = {};
      else if (c === 1) s.b = true;
      else if (c === 2) s.d = true;
      else if (c === 3) s.i = true;
      else if (c === 4) s.u = true;
      else if (c === 7) s.v = true;
      else if (c === 22) { s.b = false; s.d = false; }
      else if (c === 23) s.i = false;
      else if (c === 24) s.u = false;
      else if (c === 27) s.v = false;
      else if (c >= 30 && c <= 37) s.f = c - 30;
      else if (c >= 90 && c <= 97) s.f = c - 90 + 8;
      else if (c === 39) delete s.f;
      else if (c >= 40 && c <= 47) s.g = c - 40;
      else if (c >= 100 && c <= 107) s.g = c - 100 + 8;
      else if (c === 49) delete s.g;
      else if (c === 38 || c === 48) {
        var key = c === 38 ? "f" : "g";
        if (codes[k + 1] === 5) { s[key] = color256(codes[k + 2] || 0); k += 2; }
        else if (codes[k + 1] === 2) {
          s[key] = "rgb(" + (codes[k + 2] || 0) + "," + (codes[k + 3] || 0) + "," + (codes[k + 4] || 0) + ")";
          k += 4;
        }
      }
    }
    return Object.keys(s).some(function (key) { return s[key] !== false; }) ? s : null;
  }

  function color256(n) {
    if (n < 16) return n;
    if (n >= 232) { var v = 8 + 10 * (n - 232); return "rgb(" + v + "," + v + "," + v + ")"; }
    n -= 16;
    var steps = [0, 95, 135, 175, 215, 255];
    return "rgb(" + steps[Math.floor(n / 36)] + "," + steps[Math.floor(n / 6) % 6] + "," + steps[n % 6] + ")";
  }

  function escapeHtml(text) {
    return text.replace(/[&<>"]/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", "\"": "&quot;" }[c];
    });
  }

  function open(state) {
    if (!state) return "";
    var classes = [], style = "";
    if (typeof state.f === "number") classes.push("f" + state.f);
    else if (state.f) style += "color:" + state.f + ";";
    if (typeof state.g === "number") classes.push("g" + state.g);
    else if (state.g) style += "background:" + state.g + ";";
    if (state.g !== undefined && state.f === undefined) classes.push("ob");
    if (state.b) classes.push("b");
    if (state.d) classes.push("dim");
    if (state.i) classes.push("i");
    if (state.u) classes.push("u");
    if (state.v) classes.push("inv");
    return "<span class=\"" + classes.join(" ") + "\"" + (style ? " style=\"" + style + "\"" : "") + ">";
  }

  var OSC = /\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)/g;
  var CSI = /\x1b\[([0-9;?]*)([@-~])/g;
  var CONTROL = /[\x00-\x08\x0b-\x1f\x7f]/g;

  // What a terminal would show of a line: after its last carriage return.
  function visible(line) {
    if (line.charAt(line.length - 1) === "\r") line = line.slice(0, -1);
    var cr = line.lastIndexOf("\r");
    return cr >= 0 ? line.slice(cr + 1) : line;
  }

  // A line as HTML, starting in SGR `state`.
  function lineHtml(line, state) {
    line = visible(line);
    if (line.indexOf("\x1b") < 0) {
      var plain = escapeHtml(line.replace(CONTROL, ""));
      return state ? open(state) + plain + "</span>" : plain;
    }
    line = line.replace(OSC, "");
    var out = open(state), last = 0, m;
    CSI.lastIndex = 0;
    while ((m = CSI.exec(line)) !== null) {
      out += escapeHtml(line.slice(last, m.index).replace(/\x1b/g, "").replace(CONTROL, ""));
      last = CSI.lastIndex;
      if (m[2] === "m") {
        if (state) out += "</span>";
        state = sgr(state, m[1]);
        out += open(state);
      }
    }
    out += escapeHtml(line.slice(last).replace(/\x1b/g, "").replace(CONTROL, ""));
    if (state) out += "</span>";
    return out;
  }

  // The state after `line`, from `state`.
  function endState(line, state) {
    if (line.indexOf("\x1b[") < 0) return state;
    var m;
    CSI.lastIndex = 0;
    while ((m = CSI.exec(line)) !== null) if (m[2] === "m") state = sgr(state, m[1]);
    return state;
  }

  function LogView(el) {
    var inner = el.querySelector(".log-inner");
    var win = el.querySelector(".log-window");
    var follow = document.getElementById("log-follow");
    var count = document.getElementById("log-count");
    var status = document.getElementById("job-status");
    var lines = [""];
    var starts = new Map();
    var state = null;
    var height = 20;
    var shownFirst = -1, shownLast = -1, dirty = true, queued = false, ended = false;
    var target = 0, pendingJump = false, autoScroll = false, marked = {};

    function total() {
      return lines[lines.length - 1] === "" ? lines.length - 1 : lines.length;
    }

    function append(text) {
      var parts = text.split("\n");
      lines[lines.length - 1] += parts[0];
      for (var k = 1; k < parts.length; k++) {
        state = endState(lines[lines.length - 1], state);
        if (state) starts.set(lines.length, state);
        lines.push(parts[k]);
      }
      dirty = true;
      // The first lines at once; later ones with the next frame.
      if (!marked.first) render(); else schedule();
    }

    function schedule() {
      if (queued) return;
      queued = true;
      requestAnimationFrame(render);
    }

    function render() {
      queued = false;
      if (!el.isConnected) return;
      var n = total();
      inner.style.height = n * height + "px";
      if (pendingJump && target <= n) {
        pendingJump = false;
        autoScroll = true;
        el.scrollTop = Math.max(0, (target - 1) * height - el.clientHeight / 3);
      } else if (follow && follow.checked && !target) {
        autoScroll = true;
        el.scrollTop = el.scrollHeight;
      }
      var first = Math.max(0, Math.floor(el.scrollTop / height) - 40);
      var last = Math.min(n, Math.ceil((el.scrollTop + el.clientHeight) / height) + 40);
      if (!dirty && first === shownFirst && last === shownLast) return;
      dirty = false;
      shownFirst = first;
      shownLast = last;
      var html = "";
      for (var k = first; k < last; k++) {
        var number = k + 1;
        html += "<div class=\"line" + (number === target ? " target" : "") + "\"><a class=\"ln\" id=\"L" + number +
          "\" href=\"#L" + number + "\">" + number + "</a>" + lineHtml(lines[k], starts.get(k) || null) + "</div>";
      }
      win.style.transform = "translateY(" + first * height + "px)";
      win.innerHTML = html;
      if (count) count.textContent = n + (n === 1 ? " line" : " lines") + (ended ? "" : " so far");
      // Marks for measuring: the first lines shown, the whole log shown.
      if (n > 0 && !marked.first) { marked.first = true; performance.mark("log-first-lines"); }
      if (ended && !marked.end) { marked.end = true; performance.mark("log-complete"); }
    }

    function jump() {
      var m = /^#L(\d+)$/.exec(location.hash);
      target = m ? Number(m[1]) : 0;
      if (!target) return;
      if (follow) follow.checked = false;
      pendingJump = true;
      dirty = true;
      schedule();
    }

    el.addEventListener("scroll", function () {
      if (autoScroll) { autoScroll = false; } else if (follow && el.scrollTop + el.clientHeight < el.scrollHeight - height * 2) {
        follow.checked = false;
      }
      schedule();
    });
    if (follow) follow.addEventListener("change", function () { if (follow.checked) { target = 0; dirty = true; schedule(); } });
    window.addEventListener("hashchange", jump);
    window.addEventListener("resize", schedule);

    jump();
    var source = new EventSource(el.getAttribute("data-live"));
    source.onmessage = function (e) { append(JSON.parse(e.data).text); };
    source.addEventListener("end", function (e) {
      source.close();
      ended = true;
      if (e.data && status) status.innerHTML = e.data;
      dirty = true;
      schedule();
      el.setAttribute("data-ended", "");
    });
    source.addEventListener("failed", function () { if (count) count.textContent = "The log could not be read; reload to try again."; });
    schedule();
  }

  document.querySelectorAll("[data-live]").forEach(function (el) {
    if (el.id === "log") LogView(el); else live(el);
  });
})();

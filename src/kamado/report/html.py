"""Small HTML building blocks for a self-contained report: inline CSS, inline PNG images and one small inline
script (no library, no links out) that turns the figures' data into interactive SVG charts: hover values,
series/run toggles, drag-to-zoom, run events marked. The PNG images stay for printing and for readers without
scripts."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

CSS = """
body{font-family:-apple-system,"Segoe UI","Hiragino Sans","Noto Sans JP",sans-serif;margin:0;color:#222;
background:#fafafa;line-height:1.45}
main{max-width:1180px;margin:0 auto;padding:1.2rem 1.6rem 3rem}
h1{font-size:1.6rem;margin:.2rem 0 .3rem}h2{font-size:1.2rem;border-bottom:2px solid #ddd;padding-bottom:.2rem;
margin-top:2rem}h3{font-size:1rem;margin:1.2rem 0 .4rem}
.sub{color:#666;font-size:.9rem}
nav{font-size:.85rem;margin:.6rem 0 1rem}nav a{margin-right:.9rem;color:#1f5fa8;text-decoration:none}
table{border-collapse:collapse;margin:.4rem 0 .8rem;font-size:.85rem;background:#fff}
th,td{border:1px solid #ddd;padding:.25rem .55rem;text-align:right;vertical-align:top}
th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}
td.t{text-align:left;font-family:ui-monospace,Menlo,monospace;font-size:.8rem}
.note{color:#8a5a00;background:#fff6e0;border-left:3px solid #e0a800;padding:.3rem .6rem;font-size:.85rem;margin:.5rem 0}
.best{font-weight:bold}
img{max-width:100%;display:block;margin:.3rem 0 .8rem;background:#fff;border:1px solid #eee}
details{margin:.4rem 0}summary{cursor:pointer;color:#1f5fa8;font-size:.9rem}
pre{background:#fff;border:1px solid #ddd;padding:.6rem;font-size:.75rem;overflow:auto;max-height:28rem}
.grid{display:flex;flex-wrap:wrap;gap:1rem}.grid>div{flex:1 1 360px}
.kfig{margin:.3rem 0 .9rem}.kcs{display:none;flex-wrap:wrap;gap:.8rem}.kc-js .kcs{display:flex}
.kc-js .kfig .static{display:none}.kc-js .kfig.kc-failed .static{display:block}.kc-js .kfig.kc-failed .kcs{display:none}
@media print{.kc-js .kcs{display:none}.kc-js .kfig .static{display:block}}
.kc{flex:1 1 340px;min-width:0;background:#fff;border:1px solid #eee;padding:.3rem .4rem .2rem}
.kc-head{display:flex;justify-content:space-between;align-items:center;font-size:.85rem;font-weight:600;min-height:1.4rem}
.kc-reset{font-size:.7rem;border:1px solid #ccc;background:#f6f6f6;border-radius:3px;cursor:pointer}
.kc-box{position:relative}.kc-svg{display:block;width:100%;user-select:none}
.kc-grid line{stroke:#000;stroke-opacity:.08}.kc-frame{fill:none;stroke:#ccc}
.kc-tick{font-size:10px;fill:#555}.kc-label{font-size:11px;fill:#333}
.kc-line{fill:none;stroke-width:1.6;stroke-linejoin:round}.kc-raw{stroke-width:.8;stroke-opacity:.3}
.kc-event line{stroke:#c00;stroke-dasharray:3 3;stroke-width:1.2}.kc-event path{fill:#c00}
.kc-span{fill:#c00;fill-opacity:.1}
.kc-hover line{stroke:#888;stroke-width:1}.kc-sel{fill:#1f5fa8;fill-opacity:.12}
.kc-overlay{fill:#000;fill-opacity:0;cursor:crosshair}
.kc-tip{position:absolute;display:none;pointer-events:none;background:rgba(255,255,255,.95);border:1px solid #ccc;
border-radius:3px;padding:.25rem .45rem;font-size:.75rem;white-space:nowrap;box-shadow:0 1px 4px rgba(0,0,0,.15);z-index:2}
.kc-tiphead{font-weight:600}.kc-tipev{color:#c00}
.kc-dot{display:inline-block;width:.6rem;height:.6rem;border-radius:50%;margin-right:.3rem}
.kc-legend{display:flex;flex-wrap:wrap;gap:.2rem .5rem;font-size:.75rem;padding:.2rem 0}
.kc-item{border:none;background:none;cursor:pointer;padding:0 .2rem;font:inherit;color:#222}
.kc-item.off{opacity:.35;text-decoration:line-through}
.kc-sw{display:inline-block;width:1.1rem;border-top:2.5px solid;vertical-align:middle;margin-right:.3rem}
.kc-sw.kc-dash{border-top-style:dashed}.kc-evnote{color:#c00}
.kc-hint{color:#888;font-size:.75rem}
"""

# Interactive charts (no library): every ``div.kc[data-chart]`` is drawn as an SVG chart from its JSON spec.
CHART_JS = r"""(function () {
  "use strict";
  var NS = "http://www.w3.org/2000/svg";
  var errs = [];
  window.addEventListener("error", function (e) {
    errs.push(String(e.message));
    document.documentElement.setAttribute("data-kc-errors", errs.join(" | "));
  });
  function el(tag, attrs, parent) {
    var e = document.createElementNS(NS, tag);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(e);
    return e;
  }
  function div(cls, parent, text) {
    var e = document.createElement("div");
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    if (parent) parent.appendChild(e);
    return e;
  }
  function fmt(v) {
    if (v === null || v === undefined || !isFinite(v)) return String(v);
    var a = Math.abs(v);
    if (a !== 0 && (a >= 1e6 || a < 1e-3)) return v.toExponential(2);
    if (a >= 1000) return Math.round(v).toLocaleString("en");
    return String(+v.toPrecision(4));
  }
  function ticks(lo, hi, n) {
    var span = hi - lo;
    if (!(span > 0)) return [lo];
    var step = Math.pow(10, Math.floor(Math.log(span / n) / Math.LN10));
    var err = span / n / step;
    if (err >= 7.5) step *= 10; else if (err >= 3.5) step *= 5; else if (err >= 1.5) step *= 2;
    var out = [];
    for (var t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) out.push(+t.toPrecision(12));
    return out;
  }
  function logTicks(lo, hi) {
    var out = [];
    for (var e = Math.floor(lo); e <= Math.ceil(hi); e++) {
      [1, 2, 5].forEach(function (m) {
        var v = Math.log(m) / Math.LN10 + e;
        if (v >= lo - 1e-9 && v <= hi + 1e-9) out.push(v);
      });
    }
    if (out.length > 8) out = out.filter(function (v) { return Math.abs(v - Math.round(v)) < 1e-9; });
    if (out.length < 2) out = ticks(lo, hi, 4);
    return out;
  }
  function smooth(y, w) {
    var out = [], acc = 0;
    for (var i = 0; i < y.length; i++) {
      acc += y[i];
      if (i >= w) acc -= y[i - w];
      out.push(acc / Math.min(i + 1, w));
    }
    return out;
  }
  function nearest(xs, x) {
    var lo = 0, hi = xs.length - 1;
    if (hi < 0) return -1;
    while (hi - lo > 1) {
      var mid = (lo + hi) >> 1;
      if (xs[mid] < x) lo = mid; else hi = mid;
    }
    return Math.abs(xs[lo] - x) <= Math.abs(xs[hi] - x) ? lo : hi;
  }

  function Chart(root, spec) {
    this.root = root;
    this.spec = spec;
    this.hidden = {};
    this.zoom = null;
    var self = this;
    spec.series.forEach(function (s) {
      s.dense = !s.points && s.x.length > (spec.smooth_over || 60);
      if (s.dense) s.ys = smooth(s.y, Math.max(2, Math.floor(s.x.length / 40)));
    });
    var head = div("kc-head", root);
    div("kc-title", head, spec.title);
    this.reset = document.createElement("button");
    this.reset.className = "kc-reset";
    this.reset.textContent = "reset zoom";
    this.reset.style.visibility = "hidden";
    this.reset.addEventListener("click", function () { self.zoom = null; self.draw(); });
    head.appendChild(this.reset);
    this.box = div("kc-box", root);
    this.svg = el("svg", {"class": "kc-svg", height: spec.height || 260}, this.box);
    this.tip = div("kc-tip", this.box);
    this.legend = div("kc-legend", root);
    spec.series.forEach(function (s, i) {
      var b = document.createElement("button");
      b.className = "kc-item";
      b.title = "click: show/hide; double-click: only this one";
      var sw = document.createElement("span");
      sw.className = "kc-sw" + (s.dashed ? " kc-dash" : "");
      sw.style.borderColor = s.color;
      b.appendChild(sw);
      b.appendChild(document.createTextNode(s.label));
      b.addEventListener("click", function () {
        self.hidden[i] = !self.hidden[i];
        b.classList.toggle("off", !!self.hidden[i]);
        self.draw();
      });
      b.addEventListener("dblclick", function () {
        spec.series.forEach(function (_, j) { self.hidden[j] = j !== i; });
        Array.prototype.forEach.call(self.legend.children, function (c, j) { c.classList.toggle("off", j !== i); });
        self.draw();
      });
      self.legend.appendChild(b);
    });
    if ((spec.events || []).length) {
      div("kc-evnote", this.legend, "│ " + spec.events.length + " run event" + (spec.events.length > 1 ? "s" : "") + " marked");
    }
    this.draw();
    root.setAttribute("data-drawn", "1");
  }

  function evText(ev) {
    return (ev.run ? ev.run + ": " : "") + ev.kind + " at " + fmt(ev.x) +
      (ev.span ? " (steps " + fmt(ev.span[0]) + "–" + fmt(ev.x) + " done again)" : "") + (ev.detail ? ": " + ev.detail : "");
  }

  Chart.prototype.draw = function () {
    var self = this, spec = this.spec, svg = this.svg;
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    var W = Math.max(240, this.box.clientWidth || 480), H = spec.height || 260;
    svg.setAttribute("width", W);
    svg.setAttribute("viewBox", "0 0 " + W + " " + H);
    var m = {l: 62, r: 14, t: 10, b: 38};
    var pw = W - m.l - m.r, ph = H - m.t - m.b;
    var ty = spec.logy ? function (v) { return v > 0 ? Math.log(v) / Math.LN10 : NaN; } : function (v) { return v; };
    var vis = spec.series.filter(function (s, i) { return !self.hidden[i] && s.x.length; });
    var x0 = Infinity, x1 = -Infinity;
    (vis.length ? vis : spec.series).forEach(function (s) {
      if (s.x.length) { x0 = Math.min(x0, s.x[0]); x1 = Math.max(x1, s.x[s.x.length - 1]); }
    });
    if (this.zoom) { x0 = this.zoom[0]; x1 = this.zoom[1]; }
    if (!(x1 > x0)) { x0 -= 1; x1 += 1; }
    var y0 = Infinity, y1 = -Infinity;
    vis.forEach(function (s) {
      for (var i = 0; i < s.x.length; i++) {
        if (s.x[i] < x0 || s.x[i] > x1) continue;
        var v = ty(s.y[i]);
        if (isFinite(v)) { y0 = Math.min(y0, v); y1 = Math.max(y1, v); }
      }
    });
    if (spec.ylim && !this.zoom) { y0 = ty(spec.ylim[0]); y1 = ty(spec.ylim[1]); }
    if (!isFinite(y0)) { y0 = 0; y1 = 1; }
    if (!(y1 > y0)) { var d = Math.abs(y0) * 0.05 || 0.5; y0 -= d; y1 += d; }
    else if (!(spec.ylim && !this.zoom)) { var pad = (y1 - y0) * 0.05; y0 -= pad; y1 += pad; }
    var sx = function (x) { return m.l + (x - x0) / (x1 - x0) * pw; };
    var sy = function (v) { return m.t + (1 - (v - y0) / (y1 - y0)) * ph; };
    this.geo = {m: m, pw: pw, ph: ph, x0: x0, x1: x1, sx: sx, sy: sy, ty: ty};
    var clipId = "kc-clip-" + Chart.n++;
    var defs = el("defs", {}, svg);
    el("rect", {x: m.l, y: m.t, width: pw, height: ph}, el("clipPath", {id: clipId}, defs));
    var grid = el("g", {"class": "kc-grid"}, svg);
    var xt = ticks(x0, x1, Math.max(2, Math.floor(pw / 90)));
    xt.forEach(function (t) {
      el("line", {x1: sx(t), x2: sx(t), y1: m.t, y2: m.t + ph}, grid);
      el("text", {x: sx(t), y: m.t + ph + 14, "text-anchor": "middle", "class": "kc-tick"}, svg).textContent = fmt(t);
    });
    var yt = spec.logy ? logTicks(y0, y1) : ticks(y0, y1, Math.max(2, Math.floor(ph / 45)));
    yt.forEach(function (t) {
      el("line", {x1: m.l, x2: m.l + pw, y1: sy(t), y2: sy(t)}, grid);
      el("text", {x: m.l - 5, y: sy(t) + 3, "text-anchor": "end", "class": "kc-tick"}, svg).textContent =
        fmt(spec.logy ? Math.pow(10, t) : t);
    });
    el("rect", {x: m.l, y: m.t, width: pw, height: ph, "class": "kc-frame"}, svg);
    el("text", {x: m.l + pw / 2, y: H - 4, "text-anchor": "middle", "class": "kc-label"}, svg).textContent = spec.xlabel || "";
    el("text", {x: 12, y: m.t + ph / 2, "text-anchor": "middle", "class": "kc-label",
                transform: "rotate(-90 12 " + (m.t + ph / 2) + ")"}, svg).textContent = spec.ylabel || "";
    var plot = el("g", {"clip-path": "url(#" + clipId + ")"}, svg);
    (spec.events || []).forEach(function (ev) {
      if (ev.span && ev.span[1] >= x0 && ev.span[0] <= x1) {  // a rollback: the steps done again, shaded
        var a = sx(Math.max(ev.span[0], x0)), b = sx(Math.min(ev.span[1], x1));
        var r = el("rect", {x: a, y: m.t, width: Math.max(1, b - a), height: ph, "class": "kc-span"}, plot);
        if (ev.color) r.style.fill = ev.color;
      }
      if (ev.x < x0 || ev.x > x1) return;
      var g = el("g", {"class": "kc-event"}, plot);
      var ln = el("line", {x1: sx(ev.x), x2: sx(ev.x), y1: m.t, y2: m.t + ph}, g);
      var mk = el("path", {d: "M" + (sx(ev.x) - 5) + " " + m.t + "l10 0l-5 8z"}, g);
      if (ev.color) { ln.style.stroke = ev.color; mk.style.fill = ev.color; }
      el("title", {}, g).textContent = evText(ev);
    });
    function pathOf(xs, ys) {
      var d = "", pen = false;
      for (var i = 0; i < xs.length; i++) {
        var v = ty(ys[i]);
        if (!isFinite(v)) { pen = false; continue; }
        d += (pen ? "L" : "M") + sx(xs[i]).toFixed(1) + " " + sy(v).toFixed(1);
        pen = true;
      }
      return d || "M0 0";
    }
    spec.series.forEach(function (s, i) {
      if (self.hidden[i] || !s.x.length) return;
      var dash = s.dashed ? "6 4" : "none";
      if (s.dense) {
        el("path", {d: pathOf(s.x, s.y), "class": "kc-line kc-raw", stroke: s.color}, plot);
        el("path", {d: pathOf(s.x, s.ys), "class": "kc-line", stroke: s.color, "stroke-dasharray": dash}, plot);
      } else {
        el("path", {d: pathOf(s.x, s.y), "class": "kc-line", stroke: s.color, "stroke-dasharray": dash}, plot);
      }
      if (s.points) {
        for (var k = 0; k < s.x.length; k++) {
          var v = ty(s.y[k]);
          if (isFinite(v)) el("circle", {cx: sx(s.x[k]), cy: sy(v), r: 3, fill: s.color, "class": "kc-pt"}, plot);
        }
      }
    });
    this.hover = el("g", {"class": "kc-hover", visibility: "hidden"}, svg);
    this.cross = el("line", {y1: m.t, y2: m.t + ph}, this.hover);
    this.sel = el("rect", {y: m.t, height: ph, "class": "kc-sel", visibility: "hidden"}, svg);
    var ov = el("rect", {x: m.l, y: m.t, width: pw, height: ph, "class": "kc-overlay"}, svg);
    ov.addEventListener("mousemove", function (e) { self.move(e); });
    ov.addEventListener("mouseleave", function () { self.leave(); });
    ov.addEventListener("mousedown", function (e) { self.drag = self.px(e); e.preventDefault(); });
    ov.addEventListener("mouseup", function (e) { self.up(e); });
    ov.addEventListener("dblclick", function () { self.zoom = null; self.draw(); });
    this.reset.style.visibility = this.zoom ? "visible" : "hidden";
  };
  Chart.n = 0;
  Chart.prototype.px = function (e) {
    var r = this.svg.getBoundingClientRect();
    return e.clientX - r.left;
  };
  Chart.prototype.xAt = function (px) {
    var g = this.geo;
    return g.x0 + (px - g.m.l) / g.pw * (g.x1 - g.x0);
  };
  Chart.prototype.leave = function () {
    this.hover.setAttribute("visibility", "hidden");
    this.tip.style.display = "none";
    this.sel.setAttribute("visibility", "hidden");
    this.drag = null;
  };
  Chart.prototype.up = function (e) {
    if (this.drag === null || this.drag === undefined) return;
    var a = this.drag, b = this.px(e);
    this.drag = null;
    this.sel.setAttribute("visibility", "hidden");
    if (Math.abs(b - a) < 6) return;
    var lo = this.xAt(Math.min(a, b)), hi = this.xAt(Math.max(a, b));
    if (hi > lo) { this.zoom = [lo, hi]; this.draw(); }
  };
  Chart.prototype.move = function (e) {
    var self = this, g = this.geo, spec = this.spec, px = this.px(e);
    if (this.drag !== null && this.drag !== undefined) {
      this.sel.setAttribute("x", Math.min(this.drag, px));
      this.sel.setAttribute("width", Math.abs(px - this.drag));
      this.sel.setAttribute("visibility", "visible");
    }
    var x = this.xAt(px);
    var dots = this.hover.querySelectorAll("circle");
    Array.prototype.forEach.call(dots, function (c) { c.parentNode.removeChild(c); });
    this.cross.setAttribute("x1", px);
    this.cross.setAttribute("x2", px);
    this.hover.setAttribute("visibility", "visible");
    var rows = [], bestX = null;
    spec.series.forEach(function (s, i) {
      if (self.hidden[i] || !s.x.length) return;
      var k = nearest(s.x, x);
      if (k < 0) return;
      var yv = s.dense ? s.ys[k] : s.y[k], v = g.ty(yv);
      if (isFinite(v)) el("circle", {cx: g.sx(s.x[k]), cy: g.sy(v), r: 3.5, fill: s.color}, self.hover);
      if (bestX === null || Math.abs(s.x[k] - x) < Math.abs(bestX - x)) bestX = s.x[k];
      rows.push([s.color, s.label, s.x[k], s.y[k], s.dense ? s.ys[k] : null]);
    });
    var tip = this.tip;
    while (tip.firstChild) tip.removeChild(tip.firstChild);
    div("kc-tiphead", tip, (spec.xlabel || "x") + " " + fmt(bestX === null ? x : bestX));
    rows.forEach(function (r) {
      var line = div("kc-tiprow", tip);
      var sw = document.createElement("span");
      sw.className = "kc-dot";
      sw.style.background = r[0];
      line.appendChild(sw);
      line.appendChild(document.createTextNode(r[1] + ": " + fmt(r[3]) + (r[4] !== null ? " (avg " + fmt(r[4]) + ")" : "") +
        (Math.abs(r[2] - bestX) > 1e-9 ? " @" + fmt(r[2]) : "")));
    });
    var tol = (g.x1 - g.x0) / g.pw * 6;
    (spec.events || []).forEach(function (ev) {
      if (Math.abs(ev.x - x) <= tol) div("kc-tipev", tip, "⚑ " + evText(ev));
    });
    tip.style.display = "block";
    var bw = this.box.clientWidth, tw = tip.offsetWidth;
    tip.style.left = (px + 14 + tw > bw ? Math.max(0, px - 14 - tw) : px + 14) + "px";
    tip.style.top = (g.m.t + 4) + "px";
  };

  function init() {
    document.documentElement.classList.add("kc-js");
    var charts = [];
    Array.prototype.forEach.call(document.querySelectorAll(".kc[data-chart]"), function (root) {
      try {
        charts.push(new Chart(root, JSON.parse(root.getAttribute("data-chart"))));
      } catch (err) {
        errs.push("chart: " + err);
        document.documentElement.setAttribute("data-kc-errors", errs.join(" | "));
        root.parentNode.classList.add("kc-failed");
        if (window.console) console.error(err);
      }
    });
    var t = null;
    window.addEventListener("resize", function () {
      clearTimeout(t);
      t = setTimeout(function () { charts.forEach(function (c) { c.draw(); }); }, 100);
    });
    document.documentElement.setAttribute("data-kc-charts", String(charts.length));
    if (location.hash === "#kc-selftest" && charts.length) selftest(charts[0]);
  }
  // Used by the browser test (report.html#kc-selftest): hover, toggle and zoom the first chart for real.
  function selftest(c) {
    var out = [];
    function mouse(type, fx) {
      var ov = c.svg.querySelector(".kc-overlay"), r = ov.getBoundingClientRect();
      ov.dispatchEvent(new MouseEvent(type, {bubbles: true, clientX: r.left + r.width * fx, clientY: r.top + r.height / 2}));
    }
    mouse("mousemove", 0.5);
    out.push("hover=" + (c.tip.style.display === "block" && c.tip.querySelectorAll(".kc-tiprow").length > 0));
    var n0 = c.svg.querySelectorAll("path.kc-line").length;
    c.legend.children[0].click();
    var n1 = c.svg.querySelectorAll("path.kc-line").length;
    c.legend.children[0].click();
    out.push("toggle=" + (n1 < n0 && c.svg.querySelectorAll("path.kc-line").length === n0));
    var before = c.geo.x1 - c.geo.x0;
    mouse("mousedown", 0.3); mouse("mousemove", 0.6); mouse("mouseup", 0.6);
    var zoomed = c.geo.x1 - c.geo.x0 < before * 0.5 && c.reset.style.visibility === "visible";
    mouse("dblclick", 0.5);
    out.push("zoom=" + (zoomed && c.zoom === null && Math.abs(c.geo.x1 - c.geo.x0 - before) < 1e-9));
    mouse("mousemove", 0.55);  // leave a tooltip showing, for the test's screenshot
    document.documentElement.setAttribute("data-kc-selftest", out.join(" "));
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init); else init();
})();
"""


def esc(x: Any) -> str:
    """The one escaping rule of the report: every value from a run folder (names, metrics, counts, messages) reaches
    the page through this (directly or through :func:`table`, :func:`note`, :func:`pre`, :func:`heading`, ...);
    the report's own code never puts a value into HTML any other way."""
    return html.escape(str(x), quote=True)


def heading(text: Any, sub: Any = None) -> str:
    """An ``<h3>`` with an optional muted note after it (both escaped)."""
    return f"<h3>{esc(text)}" + (f' <span class="sub">{esc(sub)}</span>' if sub is not None else "") + "</h3>"


def para(text: Any) -> str:
    """A paragraph of text (escaped)."""
    return f"<p>{esc(text)}</p>"


def fmt(x: Any) -> str:
    """Numbers for humans: thousands separators for integers, 4 significant digits for floats."""
    if x is None:
        return "—"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        if not math.isfinite(x):
            return str(x)
        if x != 0 and (abs(x) >= 1e6 or abs(x) < 1e-3):
            return f"{x:.3g}"
        if abs(x) >= 1000:
            return f"{x:,.0f}"
        return f"{x:.4g}"
    if isinstance(x, dict | list):
        return json.dumps(x, ensure_ascii=False)[:200]
    return str(x)


def table(columns: Sequence[str], rows: Sequence[Sequence[Any]], text_cols: Sequence[int] = (),
          bold: set[tuple[int, int]] | None = None) -> str:
    """An HTML table; cells are formatted with :func:`fmt` and escaped; ``bold`` marks (row, col) cells."""
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = []
    for i, r in enumerate(rows):
        cells = []
        for j, v in enumerate(r):
            cls = []
            if j in text_cols:
                cls.append("t")
            if bold and (i, j) in bold:
                cls.append("best")
            c = f' class="{" ".join(cls)}"' if cls else ""
            cells.append(f"<td{c}>{esc(fmt(v))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def kv_table(d: dict[str, Any]) -> str:
    """Two-column table of scalar entries (nested values are shown as compact JSON)."""
    return table(["key", "value"], [[k, v] for k, v in d.items()])


def img(b64: str | None, alt: str) -> str:
    """An inline PNG (or nothing when the figure had no data)."""
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{b64}">' if b64 else ""


def figure(fig: Any, alt: str) -> str:
    """A figure of :func:`kamado.report.plots.panels_fig`: interactive charts, with the PNG kept for printing
    (and shown instead when scripts are off); nothing when the figure had no data."""
    if fig is None or not getattr(fig, "png", None):
        return ""
    charts = "".join(f'<div class="kc" data-chart="{esc(json.dumps(c, ensure_ascii=False, allow_nan=False, separators=(",", ":")))}"></div>'
                     for c in fig.charts)
    return f'<div class="kfig"><div class="kcs">{charts}</div><div class="static">{img(fig.png, alt)}</div></div>'


def note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


def details(summary: str, body: str) -> str:
    return f"<details><summary>{esc(summary)}</summary>{body}</details>"


def pre(obj: Any) -> str:
    text = obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False, indent=2, default=str)
    return f"<pre>{esc(text)}</pre>"


@dataclass
class Section:
    """One titled part of the report; ``anchor`` is its id for the table of contents."""

    anchor: str
    title: str
    body: str


def page(title: str, subtitle: str, sections: Sequence[Section]) -> str:
    """The whole document: header, table of contents, sections (and the chart script when a chart is in it)."""
    nav = "".join(f'<a href="#{esc(s.anchor)}">{esc(s.title)}</a>' for s in sections)
    parts = [f'<section id="{esc(s.anchor)}"><h2>{esc(s.title)}</h2>{s.body}</section>' for s in sections]
    charts = any('class="kc"' in s.body for s in sections)
    script = f'<script id="kamado-charts">{CHART_JS}</script>' if charts else ""
    hint = ('<p class="kc-hint">Charts: hover for values; drag to zoom, double-click to reset; click a legend entry '
            'to hide it, double-click to show only it; red marks are run events.</p>') if charts else ""
    return ("<!DOCTYPE html>\n<html lang=\"ja\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{esc(title)}</title>"
            f"<style>{CSS}</style></head><body><main><h1>{esc(title)}</h1><div class=\"sub\">{esc(subtitle)}</div>"
            f"<nav>{nav}</nav>{hint}{''.join(parts)}</main>{script}</body></html>\n")

/* Closeloop's chart module: stacked bars and lines drawn as SVG in the page, written for the
 * dashboard (no library, nothing fetched). Text is real text in the DOM (SVG <text>, an HTML
 * legend), so any font the browser has draws it, Chinese included, and a screen reader or a test
 * can read it. Every mark carries a <title> (the browser's tooltip).
 *
 *   CloseloopCharts.bars(element, {ticks, series: [{name, color, values}], format, empty})
 *   CloseloopCharts.lines(element, {ticks, series, min, max, step, format, empty})
 *
 * `ticks` are the x labels, one per value; a value may be null (no data: a gap for lines, no
 * bar). The chart takes the element's width; draw again after a resize. The element gets
 * data-marks (how many bars or points were drawn). */
(function () {
  "use strict";

  var NS = "http://www.w3.org/2000/svg";
  var HEIGHT = 220;
  var PAD = {top: 12, right: 12, bottom: 26, left: 42};

  function svgNode(name, attrs, parent, text) {
    var node = document.createElementNS(NS, name);
    Object.keys(attrs || {}).forEach(function (key) { node.setAttribute(key, attrs[key]); });
    if (text !== undefined) node.textContent = text;
    if (parent) parent.appendChild(node);
    return node;
  }

  function niceStep(span, count) {
    var raw = span / count, power = Math.pow(10, Math.floor(Math.log10(raw)));
    var steps = [1, 2, 2.5, 5, 10];
    for (var i = 0; i < steps.length; i++) if (steps[i] * power >= raw) return steps[i] * power;
    return 10 * power;
  }

  function label(format, value) {
    return value === null || value === undefined ? "—" : (format ? format(value) : String(value));
  }

  /* The frame every chart has: the SVG, its y grid with labels, and x labels that do not
   * crowd each other. Returns where a value lies. */
  function frame(element, options, lo, hi) {
    element.textContent = "";
    var width = Math.max(260, Math.floor(element.clientWidth || 600));
    var height = options.height || HEIGHT;
    var svg = svgNode("svg", {viewBox: "0 0 " + width + " " + height, width: width, height: height,
                              role: "img", "class": "chart-svg"}, element);
    if (options.title) svgNode("title", {}, svg, options.title);
    var plot = {x: PAD.left, y: PAD.top, w: width - PAD.left - PAD.right, h: height - PAD.top - PAD.bottom};
    var step = options.step || niceStep(Math.max(hi - lo, 1e-9), 4);
    var top = Math.max(lo + step, Math.ceil(hi / step - 1e-9) * step);
    if (options.max !== undefined) top = Math.min(top, options.max);
    var y = function (v) { return plot.y + plot.h - (v - lo) / (top - lo || 1) * plot.h; };
    var grid = svgNode("g", {"class": "grid"}, svg);
    for (var v = lo; v <= top + step / 1000; v += step) {
      svgNode("line", {x1: plot.x, x2: plot.x + plot.w, y1: y(v), y2: y(v)}, grid);
      svgNode("text", {x: plot.x - 6, y: y(v) + 4, "text-anchor": "end", "class": "axis"}, grid,
              label(options.axisFormat || options.format, Math.round(v * 100) / 100));
    }
    var n = Math.max(options.ticks.length, 1), band = plot.w / n;
    var longest = options.ticks.reduce(function (m, t) { return Math.max(m, String(t).length); }, 1);
    var every = Math.max(1, Math.ceil((longest * 7 + 10) / band));
    var x = function (i) { return plot.x + band * i + band / 2; };
    options.ticks.forEach(function (tick, i) {
      if (i % every === 0) {
        svgNode("text", {x: x(i), y: plot.y + plot.h + 17, "text-anchor": "middle", "class": "axis"}, svg, tick);
      }
    });
    return {svg: svg, plot: plot, band: band, x: x, y: y};
  }

  function empty(element, options) {
    var f = frame(element, options, 0, 1);
    svgNode("text", {x: f.plot.x + f.plot.w / 2, y: f.plot.y + f.plot.h / 2, "text-anchor": "middle",
                     "class": "empty"}, f.svg, options.empty || "—");
    element.setAttribute("data-marks", "0");
  }

  function legend(element, series) {
    var list = document.createElement("ul");
    list.className = "legend";
    series.forEach(function (s) {
      var item = document.createElement("li");
      var swatch = svgNode("svg", {width: 12, height: 12, viewBox: "0 0 12 12", "aria-hidden": "true"}, item);
      svgNode("rect", {width: 12, height: 12, rx: 2, fill: s.color}, swatch);
      var name = document.createElement("span");
      name.textContent = s.name;
      item.appendChild(name);
      list.appendChild(item);
    });
    element.appendChild(list);
  }

  function shown(series) {
    return series.filter(function (s) { return s.values.some(function (v) { return v !== null && v !== undefined; }); });
  }

  function bars(element, options) {
    var series = shown(options.series).filter(function (s) { return s.values.some(function (v) { return v > 0; }); });
    var totals = options.ticks.map(function (_, i) {
      return series.reduce(function (sum, s) { return sum + (s.values[i] || 0); }, 0);
    });
    if (!series.length) return empty(element, options);
    var f = frame(element, options, 0, Math.max.apply(null, totals));
    var width = Math.max(1, Math.min(f.band * 0.72, 48)), marks = 0;
    options.ticks.forEach(function (tick, i) {
      var base = 0;
      series.forEach(function (s) {
        var v = s.values[i] || 0;
        if (v <= 0) return;
        var rect = svgNode("rect", {x: f.x(i) - width / 2, y: f.y(base + v), width: width,
                                    height: Math.max(0.5, f.y(base) - f.y(base + v)), fill: s.color,
                                    "class": "mark"}, f.svg);
        svgNode("title", {}, rect, tick + " · " + s.name + ": " + label(options.format, v));
        base += v;
        marks += 1;
      });
    });
    element.setAttribute("data-marks", String(marks));
    legend(element, series);
  }

  function lines(element, options) {
    var series = shown(options.series);
    if (!series.length) return empty(element, options);
    var values = [];
    series.forEach(function (s) { s.values.forEach(function (v) { if (v !== null && v !== undefined) values.push(v); }); });
    var lo = options.min !== undefined ? options.min : Math.min.apply(null, values);
    var hi = options.max !== undefined ? options.max : Math.max.apply(null, values);
    var f = frame(element, options, lo, hi), marks = 0;
    series.forEach(function (s) {
      var points = [];
      s.values.forEach(function (v, i) { if (v !== null && v !== undefined) points.push([f.x(i), f.y(v), v, i]); });
      // Days without a figure are skipped: the line joins the days that have one.
      svgNode("polyline", {points: points.map(function (p) { return p[0] + "," + p[1]; }).join(" "),
                           fill: "none", stroke: s.color, "stroke-width": 2, "class": "line"}, f.svg);
      points.forEach(function (p) {
        var dot = svgNode("circle", {cx: p[0], cy: p[1], r: 3.5, fill: s.color, "class": "mark"}, f.svg);
        svgNode("title", {}, dot, options.ticks[p[3]] + " · " + s.name + ": " + label(options.format, p[2]));
        marks += 1;
      });
    });
    element.setAttribute("data-marks", String(marks));
    legend(element, series);
  }

  window.CloseloopCharts = {bars: bars, lines: lines};
})();

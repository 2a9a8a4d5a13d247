// md.step_through's page: the page calls minidlStepper(root) once per stepper, root the
// stepper's element; its steps are the JSON in its script.minidl-data.
/* exported minidlStepper */
function minidlStepper(root) {
  "use strict";
  if (!root || root.getAttribute("data-ready")) return;
  var data = JSON.parse(root.querySelector("script.minidl-data").textContent);
  var steps = data.steps, n = steps.length;
  var panel = root.querySelector("[data-role=step-panel]");
  var done = root.querySelector("[data-role=complete]");
  var terms = root.querySelectorAll("[data-role=terms] li");
  var slider = root.querySelector("input[type=range]");
  var where = root.querySelector(".where");
  var graph = root.querySelector(".graph"), svg = graph.querySelector("svg");
  var nodes = svg.querySelectorAll("g.node"), edges = svg.querySelectorAll("path.edge");
  var W = Number(root.getAttribute("data-width")), H = Number(root.getAttribute("data-height"));
  var LARGEST = 1.5;     // a small graph grows to the room it gets, up to this scale
  var PANEL = 460;       // px: the least width of a panel beside the graph
  var scale = 1;

  function current() { return Number(root.getAttribute("data-current")); }

  function show(k) {
    k = Math.max(0, Math.min(n - 1, k));
    var s = steps[k];
    root.setAttribute("data-current", String(k));
    slider.value = String(k);
    where.textContent = "step " + (k + 1) + " of " + n;
    panel.innerHTML = s.panel;
    done.innerHTML = s.complete;
    for (var t = 0; t < terms.length; t++) {
      var at = Number(terms[t].getAttribute("data-step"));
      terms[t].classList.toggle("done", k >= at);
      terms[t].classList.toggle("now", k === at);
    }
    for (var i = 0; i < nodes.length; i++) {
      var g = nodes[i], v = Number(g.getAttribute("data-node")), text = s.text[String(v)] || ["", ""];
      g.classList.toggle("current", v === s.node);
      g.classList.toggle("target", s.targets.indexOf(v) >= 0);
      g.classList.toggle("done", s.done.indexOf(v) >= 0 && v !== s.node);
      g.querySelector("text.acc").textContent = text[0];
      g.querySelector("text.sent").textContent = text[1];
    }
    for (var e = 0; e < edges.length; e++) {
      var to = Number(edges[e].getAttribute("data-to")), from = Number(edges[e].getAttribute("data-from"));
      edges[e].classList.toggle("flow", to === s.node && s.targets.indexOf(from) >= 0);
    }
    follow();
  }

  // a graph wider than its place scrolls sideways: keep this step's op and what it sends to in view
  function follow() {
    if (graph.scrollWidth <= graph.clientWidth) return;
    var s = steps[current()], left = Infinity, right = -Infinity;
    for (var i = 0; i < nodes.length; i++) {
      var v = Number(nodes[i].getAttribute("data-node"));
      if (v !== s.node && s.targets.indexOf(v) < 0) continue;
      var box = nodes[i].getBBox();
      left = Math.min(left, box.x * scale);
      right = Math.max(right, (box.x + box.width) * scale);
    }
    var view = graph.clientWidth, margin = 24;
    var x = right - left + 2 * margin <= view ? (left + right - view) / 2 : left - margin;
    graph.scrollLeft = Math.max(0, Math.min(graph.scrollWidth - view, x));
  }

  // the height the page gives: the scrolling box it is shown in (a notebook's), else the window
  function screenHeight() {
    for (var e = root.parentElement; e && e !== document.body; e = e.parentElement) {
      var y = getComputedStyle(e).overflowY;
      if ((y === "auto" || y === "scroll") && e.clientHeight > 0) return Math.min(e.clientHeight, window.innerHeight);
    }
    return window.innerHeight;
  }

  // lay the graph out for the room it gets: never smaller than its own size (its text 12 px), larger
  // where the width and the screen's height allow; a narrow graph takes its panel beside it if both fit
  var laidOutFor = -1;
  function fit() {
    var room = root.clientWidth - 8;
    if (room <= 0 || room === laidOutFor) return;
    laidOutFor = room;
    var beside = root.getAttribute("data-narrow") === "1" && room >= W + 16 + PANEL;
    root.classList.toggle("beside", beside);
    var across = beside ? room - 16 - PANEL : room;
    // what else must share the screen with the graph, and a margin for the page around the stepper
    var rest = (beside ? root.querySelector(".bar").offsetHeight : root.offsetHeight - graph.offsetHeight) + 32;
    scale = Math.max(1, Math.min(LARGEST, across / W, (screenHeight() - rest) / H));
    svg.setAttribute("width", String(Math.floor(W * scale)));
    svg.setAttribute("height", String(Math.floor(H * scale)));
    follow();
  }

  // a mouse click leaves the focus on the stepper, not on its button or slider: Space and
  // Up/Down then scroll the page as ever, instead of clicking the button again or moving the slider
  function refocus(e) { if (e.type === "pointerup" || e.detail) root.focus({preventScroll: true}); }
  root.querySelector("button.prev").addEventListener("click", function (e) { show(current() - 1); refocus(e); });
  root.querySelector("button.next").addEventListener("click", function (e) { show(current() + 1); refocus(e); });
  slider.addEventListener("input", function () { show(Number(slider.value)); });
  slider.addEventListener("pointerup", refocus);
  graph.addEventListener("click", refocus);
  root.addEventListener("focus", function () { root.classList.add("focused"); });
  root.addEventListener("blur", function () { root.classList.remove("focused"); });

  function visible() {
    var r = root.getBoundingClientRect();
    return r.bottom > 0 && r.top < window.innerHeight && r.right > 0 && r.left < window.innerWidth;
  }
  // Left/Right/Home/End only, and only on a stepper at least partly on screen; the page keeps
  // Up/Down/Space/PageUp/PageDown for scrolling
  var MOVES = {ArrowRight: function () { return current() + 1; }, ArrowLeft: function () { return current() - 1; },
               Home: function () { return 0; }, End: function () { return n - 1; }};
  function key(e) {
    if (!Object.prototype.hasOwnProperty.call(MOVES, e.key) || e.altKey || e.ctrlKey || e.metaKey || e.shiftKey
        || !visible()) return false;
    show(MOVES[e.key]());
    e.preventDefault();
    return true;
  }
  root.__minidlKey = key;
  // keys act on the stepper that has the focus, and stop there: a notebook's own shortcuts
  // (JupyterLab's command mode moves the cell selection with the arrows) never see them
  root.addEventListener("keydown", function (e) {
    var t = e.target;
    if (t === slider || t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName)) return;
    if (key(e)) e.stopPropagation();
  });
  // or, the focus on the page itself, on the one last clicked
  root.addEventListener("pointerdown", function () { window.__minidlLastStepper = root; });
  if (!window.__minidlStepperKeys) {
    window.__minidlStepperKeys = true;
    document.addEventListener("keydown", function (e) {
      var last = window.__minidlLastStepper, t = e.target;
      if (!last || !document.body.contains(last)) return;
      if (t !== document.body && t !== document.documentElement) return;  // typing elsewhere: not ours
      last.__minidlKey(e);
    });
  }
  if (window.ResizeObserver) new ResizeObserver(fit).observe(root);
  window.addEventListener("resize", fit);
  show(0);
  fit();
  root.setAttribute("data-ready", "1");
}

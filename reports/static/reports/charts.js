/*
 * Usage charts: draws every <canvas data-chart> from the JSON its page embeds
 * (see reports/cycle_usage.py, CycleUsage.chart): "area" is the credits trend, one stacked
 * area per product (days to come are a gap); "change" the day-over-day bars. Chart.js is vendored next to this file
 * (vendor/chartjs, see its README.md); nothing is loaded from a CDN.
 *
 * The tooltip is an HTML element rather than Chart.js's canvas drawing, so that it can be read
 * by assistive technology and by the browser tests, and it follows the keyboard as well as the
 * mouse: focus the chart, then Left/Right (Home/End) move between days, Escape hides it.
 */
(function () {
  "use strict";

  var PALETTE = [
    "#2563eb", "#f59e0b", "#059669", "#db2777", "#7c3aed",
    "#0891b2", "#dc2626", "#65a30d", "#475569", "#ea580c",
  ];
  var OTHER = "#94a3b8";
  var UP = "#059669";
  var DOWN = "#dc2626";

  function withAlpha(color, alpha) {
    var match = /rgba?\((\d+),\s*(\d+),\s*(\d+)/.exec(color);
    return match ? "rgba(" + match[1] + "," + match[2] + "," + match[3] + "," + alpha + ")" : color;
  }

  /* The page gives each product a stable colour index (-1: adjustments and other). */
  function colour(dataset) {
    return dataset.color >= 0 ? PALETTE[dataset.color % PALETTE.length] : OTHER;
  }

  function element(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function tooltipLines(data, kind, index) {
    if (kind === "change") {
      return [
        ["Credits", data.totals[index]],
        ["Change from the day before", data.datasets[0].display[index]],
      ];
    }
    var lines = [];
    data.datasets.forEach(function (dataset) {
      if (dataset.values[index]) {
        lines.push([dataset.label, dataset.display[index], colour(dataset)]);
      }
    });
    if (!lines.length) lines.push(["No usage", "0.0000"]);
    lines.push(["Total", data.totals[index]]);
    return lines;
  }

  function showTooltip(container, data, kind, index, x) {
    var tooltip = container.querySelector(".chart-tooltip");
    tooltip.replaceChildren();
    tooltip.appendChild(element("p", "chart-tooltip-title", data.titles[index]));
    var list = element("dl");
    tooltipLines(data, kind, index).forEach(function (line) {
      var term = element("dt");
      if (line[2]) {
        var swatch = element("span", "chart-swatch");
        swatch.style.background = line[2];
        term.appendChild(swatch);
      }
      term.appendChild(document.createTextNode(line[0]));
      list.appendChild(term);
      list.appendChild(element("dd", null, line[1] + (line[0] === "No usage" ? "" : " credits")));
    });
    tooltip.appendChild(list);
    tooltip.hidden = false;
    tooltip.dataset.day = data.days[index];
    var width = container.clientWidth;
    var left = Math.min(Math.max(x + 12, 0), width - tooltip.offsetWidth - 4);
    if (x + 12 + tooltip.offsetWidth > width) left = Math.max(0, x - tooltip.offsetWidth - 12);
    tooltip.style.left = left + "px";
  }

  function hideTooltip(container) {
    var tooltip = container.querySelector(".chart-tooltip");
    tooltip.hidden = true;
    delete tooltip.dataset.day;
  }

  function datasetsFor(data, kind) {
    if (kind === "change") {
      var values = data.datasets[0].values;
      return [{
        label: data.datasets[0].label,
        data: values,
        backgroundColor: values.map(function (v) { return v < 0 ? DOWN : UP; }),
        borderRadius: 2,
      }];
    }
    var fewDays = data.days.length <= 7;
    return data.datasets.map(function (dataset, index) {
      var color = colour(dataset);
      return {
        type: "line",
        label: dataset.label,
        data: dataset.values,
        // Each area fills down to the one below it: the top line is the day's total.
        fill: index === 0 ? "origin" : "-1",
        backgroundColor: color + "99",
        borderColor: color,
        borderWidth: 1.5,
        pointRadius: fewDays ? 3 : 0,
        pointHoverRadius: 4,
        pointBackgroundColor: color,
        tension: 0,
        stack: "credits",
      };
    });
  }

  function lastShownIndex(data) {
    var index = data.days.length - 1;
    while (index > 0 && data.future && data.future[index]) index -= 1;
    return index;
  }

  function draw(canvas) {
    var source = document.getElementById(canvas.dataset.source);
    if (!source || typeof window.Chart === "undefined") return;
    var data = JSON.parse(source.textContent);
    var kind = canvas.dataset.chart;
    var container = canvas.closest(".chart");
    var style = getComputedStyle(container);
    var textColor = style.color;
    var gridColor = withAlpha(textColor, 0.15);

    var chart = new window.Chart(canvas, {
      type: kind === "change" ? "bar" : "line",
      data: { labels: data.labels, datasets: datasetsFor(data, kind) },
      options: {
        responsive: true,
        maintainAspectRatio: false,
        animation: false,
        interaction: { mode: "index", intersect: false },
        scales: {
          x: {
            stacked: true,
            offset: kind === "change",
            grid: { display: false },
            ticks: { color: textColor, autoSkip: true, maxRotation: 0 },
          },
          y: {
            stacked: true,
            beginAtZero: true,
            grid: { color: gridColor },
            ticks: { color: textColor },
            title: { display: true, text: kind === "change" ? "Change (credits)" : "Credits", color: textColor },
          },
        },
        plugins: {
          legend: {
            display: kind !== "change",
            position: "bottom",
            labels: { color: textColor, boxWidth: 12, boxHeight: 12 },
          },
          tooltip: {
            enabled: false,
            external: function (context) {
              var tooltip = context.tooltip;
              if (!tooltip.opacity || !tooltip.dataPoints || !tooltip.dataPoints.length) {
                if (document.activeElement !== canvas) hideTooltip(container);
                return;
              }
              showTooltip(container, data, kind, tooltip.dataPoints[0].dataIndex, tooltip.caretX);
            },
          },
        },
      },
    });

    var active = null;
    function activate(index) {
      if (!chart.data.datasets.length) return;
      active = Math.max(0, Math.min(index, lastShownIndex(data)));
      var elements = chart.data.datasets.map(function (_, datasetIndex) {
        return { datasetIndex: datasetIndex, index: active };
      });
      var point = chart.getDatasetMeta(0).data[active];
      chart.setActiveElements(elements);
      chart.tooltip.setActiveElements(elements, { x: point.x, y: point.y });
      chart.update();
      showTooltip(container, data, kind, active, point.x);
    }
    canvas.addEventListener("focus", function () { activate(active === null ? lastShownIndex(data) : active); });
    canvas.addEventListener("blur", function () {
      chart.setActiveElements([]);
      chart.tooltip.setActiveElements([], { x: 0, y: 0 });
      chart.update();
      hideTooltip(container);
    });
    canvas.addEventListener("keydown", function (event) {
      var moves = { ArrowLeft: -1, ArrowRight: 1 };
      if (event.key in moves) activate((active === null ? 0 : active) + moves[event.key]);
      else if (event.key === "Home") activate(0);
      else if (event.key === "End") activate(lastShownIndex(data));
      else if (event.key === "Escape") hideTooltip(container);
      else return;
      event.preventDefault();
    });
    canvas.addEventListener("mouseleave", function () {
      if (document.activeElement !== canvas) hideTooltip(container);
    });
  }

  function drawAll() {
    document.querySelectorAll("canvas[data-chart]").forEach(draw);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", drawAll);
  else drawAll();
})();

// A session's power and energy curve, drawn with uPlot from the JSON the page embeds
// (the table of samples below it is what a browser without JavaScript shows).
(function () {
  "use strict";
  function draw() {
    var holder = document.getElementById("session-curve");
    if (!holder || typeof uPlot === "undefined") return;
    var source = document.getElementById(holder.dataset.curve);
    if (!source) return;
    var curve = JSON.parse(source.textContent);
    var width = Math.max(holder.clientWidth || 600, 300);
    var options = {
      width: width,
      height: 320,
      series: [
        {},
        { label: "Power (W)", stroke: "#0b57d0", width: 2, scale: "W" },
        { label: "Energy (Wh)", stroke: "#1e7b34", width: 2, scale: "Wh" }
      ],
      axes: [
        {},
        { scale: "W", label: "W" },
        { scale: "Wh", label: "Wh", side: 1, grid: { show: false } }
      ]
    };
    holder.textContent = "";
    new uPlot(options, [curve.at, curve.power_w, curve.energy_wh], holder);
    holder.dataset.drawn = "true";
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", draw);
  } else {
    draw();
  }
})();

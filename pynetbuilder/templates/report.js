(function () {
  "use strict";
  // Sort the layer table by a clicked header: numbers (data-v) largest first,
  // text in code-point order; a second click reverses; ties keep layer order.
  var table = document.getElementById("layers");
  var body = table.tBodies[0];
  var headers = Array.prototype.slice.call(table.tHead.rows[0].cells);
  function sortBy(column) {
    var th = headers[column];
    var numeric = th.getAttribute("data-kind") === "num";
    var current = th.getAttribute("aria-sort");
    var ascending = current ? current !== "ascending" : !numeric;
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x, y, order;
      if (numeric) {
        x = Number(a.cells[column].getAttribute("data-v"));
        y = Number(b.cells[column].getAttribute("data-v"));
        order = x - y;
      } else {
        x = a.cells[column].textContent;
        y = b.cells[column].textContent;
        order = x < y ? -1 : x > y ? 1 : 0;  // code-point order, as Python's sorted()
      }
      if (order === 0) {
        return Number(a.cells[0].getAttribute("data-v")) - Number(b.cells[0].getAttribute("data-v"));
      }
      return ascending ? order : -order;
    });
    rows.forEach(function (row) { body.appendChild(row); });
    headers.forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
  }
  headers.forEach(function (th, column) {
    th.addEventListener("click", function () { sortBy(column); });
  });
  // "fit" buttons: scale a drawing to fit its box (both ways), or back to natural size
  Array.prototype.forEach.call(document.querySelectorAll("button.fit"), function (button) {
    button.addEventListener("click", function (event) {
      event.preventDefault();
      var box = document.getElementById(button.getAttribute("data-fit")).querySelector(".svg-box");
      var svg = box.querySelector("svg");
      var fitted = box.classList.toggle("fitted");
      if (fitted) {
        var view = svg.viewBox.baseVal;
        var scale = Math.min((box.clientWidth - 20) / view.width,
                             (window.innerHeight * 0.8) / view.height);
        svg.style.width = Math.floor(view.width * scale) + "px";
        svg.style.height = Math.floor(view.height * scale) + "px";
      } else {
        svg.style.width = "";
        svg.style.height = "";
      }
      button.textContent = fitted ? "natural size" : "fit in window";
    });
  });
  document.documentElement.setAttribute("data-script", "ok");
}());

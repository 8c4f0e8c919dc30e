/*
 * The Reports page's download dialogs (templates/reports/partials/report_cards.html): a
 * native <dialog> per card, opened modally by its card's Download button (so the keyboard
 * stays inside, Escape closes it and focus returns to the button). The form itself is a
 * plain GET to the download URL, which answers the report API's file; this script only
 * opens the dialog, shows the fields of the chosen kind of timeframe and checks that a
 * custom range is at most 366 days before sending.
 */
(function () {
  "use strict";

  var MAX_DAYS = 366;
  var DAY_MS = 24 * 60 * 60 * 1000;

  function showChosenRange(form) {
    var kind = form.querySelector("[data-timeframe]").value;
    form.querySelectorAll("[data-when]").forEach(function (group) {
      var shown = group.getAttribute("data-when") === kind;
      group.hidden = !shown;
      group.querySelectorAll("select, input").forEach(function (field) {
        field.disabled = !shown;
      });
    });
    form.querySelector("[data-range-error]").hidden = true;
  }

  function rangeProblem(form) {
    if (form.querySelector("[data-timeframe]").value !== "custom") return "";
    var start = form.querySelector("[data-start]").value;
    var end = form.querySelector("[data-end]").value;
    if (!start || !end) return "Choose the first and the last day.";
    var days = Math.round((Date.parse(end) - Date.parse(start)) / DAY_MS) + 1;
    if (days < 1) return "The range ends before it starts.";
    if (days > MAX_DAYS) return "A custom range spans at most " + MAX_DAYS + " days.";
    return "";
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.documentElement.classList.add("js");
    document.querySelectorAll("[data-open-dialog]").forEach(function (button) {
      var dialog = document.getElementById(button.getAttribute("data-open-dialog"));
      button.addEventListener("click", function () {
        dialog.showModal();
      });
    });
    document.querySelectorAll("[data-download-form]").forEach(function (form) {
      var dialog = form.closest("dialog");
      form.querySelector("[data-timeframe]").addEventListener("change", function () {
        showChosenRange(form);
      });
      showChosenRange(form);
      form.addEventListener("submit", function (event) {
        if (event.submitter && event.submitter.hasAttribute("data-cancel")) return;
        var problem = rangeProblem(form);
        var error = form.querySelector("[data-range-error]");
        if (problem) {
          event.preventDefault();
          error.textContent = problem;
          error.hidden = false;
          return;
        }
        // The file downloads and the page stays: close the dialog once the form is sent.
        window.setTimeout(function () { dialog.close(); }, 0);
      });
    });
  });
})();

/* FaceClean's keyboard and selection behaviour. No framework, no build step.

   Any page with a .face-grid of .face-card[tabindex] items gets:
     j / k, arrows   move the focus between cards (up / down by a row)
     c r x l         click the focused card's [data-key~=<key>] button (confirm, reject, remove, low
                     quality); a card without one is acted on alone through the form its checkbox
                     belongs to (the button named action=confirm|reject|remove|low_quality)
     e               open the focused card's relabel box (or its form's) and focus its search
     u               undo the focused card's decision (a card's [data-key~=u] button)
     space           toggle the focused card's selection
     a               select (or unselect) the whole page;  b  bulk-confirm the selection
     ?               show or hide the #shortcuts dialog;   Esc  close it
   On a .face-grid[data-selectable], a click on a card toggles its input[name=ids] checkbox and a
   shift-click selects the range from the last card clicked. After an htmx decision on a card,
   the focus moves to the next card still open. */
(function () {
  "use strict";

  var TYPING = "input:not([type=checkbox]):not([type=radio]), select, textarea, [contenteditable]";
  var INTERACTIVE = "a, button, input, select, textarea, label, summary, details";
  var anchor = null;      // the card a shift-click range starts from
  var pending = null;     // {id, focus} of the card whose decision is in flight
  var loadingFrom = null; // how many cards there were when "load more" was asked for
  var bulkPending = false;

  function cards() {
    return Array.prototype.slice.call(document.querySelectorAll(".face-grid .face-card[tabindex]"));
  }

  function currentCard() {
    var el = document.activeElement;
    return el && el.closest ? el.closest(".face-grid .face-card") : null;
  }

  function focusCard(card) {
    if (!card) return;
    card.focus({ preventScroll: true });
    card.scrollIntoView({ block: "nearest" });
  }

  function isOpen(card) {
    return !card.classList.contains("decided");
  }

  function columns(list) {
    // Cards laid out on the same row share their top offset.
    var top = list.length ? list[0].offsetTop : 0, n = 0;
    while (n < list.length && list[n].offsetTop === top) n++;
    return Math.max(n, 1);
  }

  function move(step) {
    var list = cards();
    if (!list.length) return;
    var i = list.indexOf(currentCard());
    if (step === "row+" || step === "row-") {
      var cols = columns(list);
      step = step === "row+" ? cols : -cols;
    }
    i = i < 0 ? 0 : Math.max(0, Math.min(list.length - 1, i + step));
    focusCard(list[i]);
  }

  function nextOpenAfter(card) {
    var list = cards(), i = list.indexOf(card);
    for (var j = i + 1; j < list.length; j++) if (isOpen(list[j])) return list[j];
    for (var k = 0; k < i; k++) if (isOpen(list[k])) return list[k];
    return null;
  }

  function afterSelection() {
    // {id, next}: the first selected card, and the nearest unselected card after the selection
    // (else before it), for the focus after a bulk action on the identity page.
    var list = cards();
    var chosen = list.filter(function (c) { var b = checkbox(c); return b && b.checked; });
    if (!chosen.length) return null;
    var free = function (c) { var b = checkbox(c); return !b || !b.checked; };
    var next = list.slice(list.indexOf(chosen[chosen.length - 1]) + 1).find(free) ||
      list.slice(0, list.indexOf(chosen[0])).reverse().find(free);
    return { id: chosen[0].id, next: next ? next.id : null };
  }

  // -- selection ----------------------------------------------------------------------------

  function checkbox(card) {
    return card ? card.querySelector("input[type=checkbox][name=ids]") : null;
  }

  function selectable(card) {
    return card && card.closest(".face-grid[data-selectable]") && checkbox(card);
  }

  function setChecked(box, value) {
    if (box && !box.disabled && box.checked !== value) {
      box.checked = value;
      box.dispatchEvent(new Event("change", { bubbles: true }));
    }
  }

  function selectRange(from, to, value) {
    var list = cards(), a = list.indexOf(from), b = list.indexOf(to);
    if (a < 0 || b < 0) return setChecked(checkbox(to), value);
    for (var i = Math.min(a, b); i <= Math.max(a, b); i++) setChecked(checkbox(list[i]), value);
  }

  function toggle(card, shift) {
    var box = checkbox(card);
    if (!box) return;
    var value = !box.checked;
    if (shift && anchor && anchor !== card && anchor.isConnected) selectRange(anchor, card, value);
    else setChecked(box, value);
    anchor = card;
    updateCount();
  }

  function pageBoxes() {
    return Array.prototype.slice.call(
      document.querySelectorAll(".face-grid[data-selectable] .face-card input[type=checkbox][name=ids]"));
  }

  function selectPage() {
    var boxes = pageBoxes();
    var all = boxes.length && boxes.every(function (b) { return b.checked; });
    boxes.forEach(function (b) { setChecked(b, !all); });
    updateCount();
  }

  function updateCount() {
    var n = pageBoxes().filter(function (b) { return b.checked; }).length;
    document.querySelectorAll("[data-selected-count]").forEach(function (el) {
      el.textContent = n + " selected";
    });
  }

  document.addEventListener("mousedown", function (ev) {
    // A shift-click would otherwise select the text between the two cards.
    if (ev.shiftKey && ev.target.closest && ev.target.closest(".face-grid[data-selectable] .face-card")) {
      if (!ev.target.closest(TYPING)) ev.preventDefault();
    }
  });

  document.addEventListener("click", function (ev) {
    var toggler = ev.target.closest && ev.target.closest("[data-select-page]");
    if (toggler) { ev.preventDefault(); selectPage(); return; }
    if (ev.target.closest && ev.target.closest("[data-shortcuts-toggle]")) { toggleShortcuts(); return; }
    var card = ev.target.closest && ev.target.closest(".face-grid[data-selectable] .face-card");
    if (!selectable(card)) return;
    var box = checkbox(card);
    if (ev.target === box) {
      // The browser has toggled it already: extend to a range on shift.
      if (ev.shiftKey && anchor && anchor !== card && anchor.isConnected) selectRange(anchor, card, box.checked);
      anchor = card;
      updateCount();
      return;
    }
    if (ev.target.closest(INTERACTIVE)) return;
    toggle(card, ev.shiftKey);
    focusCard(card);
  });

  document.addEventListener("change", function (ev) {
    if (ev.target.matches && ev.target.matches("input[type=checkbox][name=ids]")) updateCount();
  });

  // -- the shortcuts dialog -----------------------------------------------------------------

  function toggleShortcuts() {
    var dialog = document.getElementById("shortcuts");
    if (!dialog) return;
    if (dialog.open) dialog.close();
    else if (dialog.showModal) dialog.showModal();
    else dialog.setAttribute("open", "");
  }

  // -- keys ---------------------------------------------------------------------------------

  var KEY_ACTIONS = { c: "confirm", r: "reject", x: "remove", l: "low_quality" };

  function selectOnly(card) {
    var box = checkbox(card);
    pageBoxes().forEach(function (b) { setChecked(b, b === box); });
    anchor = card;
    updateCount();
    return box;
  }

  function formButton(form, action) {
    // form.elements also holds buttons outside the form that name it with form="…".
    return Array.prototype.find.call(form.elements, function (el) {
      return el.name === "action" && el.value === action && el.type === "submit";
    });
  }

  function clickKey(card, key) {
    if (!card) return false;
    var button = card.querySelector('[data-key~="' + key + '"]');
    if (button) {
      button.click();
      return true;
    }
    // A card without its own buttons (the identity page): act on it alone through the form
    // its checkbox belongs to.
    var box = selectable(card) ? checkbox(card) : null;
    var action = KEY_ACTIONS[key];
    var bulk = box && box.form && action && formButton(box.form, action);
    if (!bulk) return false;
    selectOnly(card);
    var next = nextOpenAfter(card);
    pending = { id: card.id, next: next ? next.id : null };
    bulk.click();
    return true;
  }

  function openRelabel(card) {
    var details = card && card.querySelector(".fc-relabel");
    if (!details && selectable(card) && checkbox(card).form) {
      // No relabel box of its own: select the card alone and open its form's relabel box.
      details = Array.prototype.find.call(checkbox(card).form.querySelectorAll("details"), function (d) {
        return d.querySelector("input[type=search]");
      });
      if (details) selectOnly(card);
    }
    if (!details) return false;
    details.open = true;
    var input = details.querySelector("input[type=search]");
    if (input) input.focus();
    return true;
  }

  function relabelEnter(ev) {
    // Enter in a relabel box relabels to the checked identity, never submits the card's
    // default (confirm) button.
    var scope = ev.target.closest(".fc-relabel, .bulk-relabel");
    if (!scope) return false;
    ev.preventDefault();
    if (scope.querySelector("input[type=radio]:checked")) {
      var button = scope.querySelector("[data-relabel]");
      if (button) button.click();
    }
    return true;
  }

  document.addEventListener("keydown", function (ev) {
    if (ev.defaultPrevented || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    var target = ev.target;
    var dialog = document.getElementById("shortcuts");
    if (ev.key === "Escape") {
      if (dialog && dialog.open) { dialog.close(); ev.preventDefault(); return; }
      var details = target.closest && target.closest("details[open]");
      if (details) {
        details.open = false;
        var owner = details.closest(".face-card");
        if (owner) focusCard(owner); else details.querySelector("summary").focus();
        ev.preventDefault();
      }
      return;
    }
    if (ev.key === "Enter" && target.matches && target.matches("input") && relabelEnter(ev)) return;
    if (target.matches && target.matches(TYPING)) return;
    if (ev.key === "?") { ev.preventDefault(); toggleShortcuts(); return; }
    if (dialog && dialog.open) return;
    if (!document.querySelector(".face-grid")) return;

    var card = currentCard();
    var onCard = card && target === card;
    var onPage = target === document.body || target === document.documentElement || onCard;
    var key = ev.key.length === 1 ? ev.key.toLowerCase() : ev.key;
    if (ev.key === " " && !onCard) return; // space on a button presses the button
    if (ev.shiftKey && key !== "?" && ev.key.length === 1 && ev.key !== " ") return;

    switch (key) {
      case "j": move(1); break;
      case "k": move(-1); break;
      case "ArrowRight": if (!onPage) return; move(1); break;
      case "ArrowLeft": if (!onPage) return; move(-1); break;
      case "ArrowDown": if (!onPage) return; move("row+"); break;
      case "ArrowUp": if (!onPage) return; move("row-"); break;
      case "c": case "r": case "x": case "l": case "u":
        if (!card) { move(0); break; }
        if (!clickKey(card, key)) return;
        break;
      case "e":
        if (!card) { move(0); break; }
        if (!openRelabel(card)) return;
        break;
      case " ":
        if (!selectable(card)) return;
        toggle(card, false);
        break;
      case "a": selectPage(); break;
      case "b": {
        var bulk = document.querySelector('[data-bulk="confirm"]');
        if (!bulk) return;
        bulk.click();
        break;
      }
      default: return;
    }
    ev.preventDefault();
  });

  // -- after htmx swaps ---------------------------------------------------------------------

  document.addEventListener("htmx:beforeRequest", function (ev) {
    var elt = ev.detail && ev.detail.elt;
    if (!elt || !elt.closest) return;
    var card = elt.closest(".face-grid .face-card");
    if (card && (ev.detail.requestConfig || {}).verb === "post") {
      var next = nextOpenAfter(card);
      pending = { id: card.id, next: next ? next.id : null, from: ev.detail.requestConfig };
    } else if (elt.matches("#bulk-form")) {
      bulkPending = true;
      // The identity page: once the answer is in, focus the card after the selection (a
      // relabelled card leaves the grid, and the closing relabel box would leave focus on <body>).
      if (!pending) {
        pending = afterSelection();
        if (pending) pending.from = ev.detail.requestConfig;
      }
    } else if (elt.closest(".load-more")) {
      loadingFrom = cards().length;
    }
  });

  document.addEventListener("htmx:afterRequest", function (ev) {
    var elt = ev.detail && ev.detail.elt;
    // A failed decision swaps nothing in: forget the focus it would have moved.
    if (pending && ev.detail.requestConfig === pending.from && !ev.detail.successful) pending = null;
    // An undo on a decided card: reload the card, which is open again.
    var url = elt && elt.getAttribute && elt.getAttribute("data-reload");
    var card = url && elt.closest(".face-card");
    if (!card || !ev.detail.successful || !window.htmx) return;
    var id = card.id;
    window.htmx.ajax("GET", url, { target: "#" + id, swap: "outerHTML" }).then(function () {
      focusCard(document.getElementById(id));
    });
  });

  document.addEventListener("htmx:afterSettle", function (ev) {
    // Only the answer to the decision moves the focus: a name search still in flight when Enter
    // relabelled may settle first, while the relabelled card is still on the page.
    // (htmx sets detail.elt to each swapped element; the request's config is the one object.)
    var from = ev.detail && ev.detail.requestConfig;
    if (bulkPending) {
      // The bulk answer swapped the decided cards in: close the relabel box it came from.
      bulkPending = false;
      document.querySelectorAll(".bulk-relabel[open]").forEach(function (d) { d.open = false; });
    }
    if (pending && from === pending.from) {
      var card = document.getElementById(pending.id);
      var next = pending.next && document.getElementById(pending.next);
      pending = null;
      if (card) focusCard(isOpen(card) ? card : (nextOpenAfter(card) || card));
      else if (next) focusCard(next); // the decided card left the grid
    } else if (loadingFrom !== null) {
      var list = cards();
      if (list.length > loadingFrom && (!document.activeElement || document.activeElement === document.body)) {
        focusCard(list[loadingFrom]);
      }
      loadingFrom = null;
    }
    updateCount();
  });

  document.addEventListener("DOMContentLoaded", updateCount);

  // -- messages (toasts) --------------------------------------------------------------------
  // Every message gets a close button; all but errors go away by themselves (warnings stay
  // longer), and not while the pointer or the focus is on them. The CSS keeps them in the
  // bottom-left corner, clear of the toolbars' buttons at the top right.

  var TOAST_MS = { success: 6000, info: 6000, debug: 6000, warning: 12000 };

  function dismissToast(message) {
    if (!message.isConnected) return;
    message.classList.add("leaving");
    setTimeout(function () { message.remove(); }, 250);
  }

  function setUpToast(message) {
    message.setAttribute("data-toast", "");
    var close = document.createElement("button");
    close.type = "button";
    close.className = "message-close";
    close.setAttribute("aria-label", "Dismiss this message");
    close.textContent = "\u00d7";
    close.addEventListener("click", function () { dismissToast(message); });
    message.appendChild(close);
    if (message.classList.contains("error")) return; // errors stay until closed
    var level = Object.keys(TOAST_MS).filter(function (l) { return message.classList.contains(l); })[0];
    var timer = null, left = TOAST_MS[level || "info"], started = 0;
    function run() { started = Date.now(); timer = setTimeout(function () { dismissToast(message); }, left); }
    function hold() { if (timer) { clearTimeout(timer); timer = null; left = Math.max(left - (Date.now() - started), 1500); } }
    message.addEventListener("mouseenter", hold);
    message.addEventListener("focusin", hold);
    message.addEventListener("mouseleave", function () { if (!timer && !message.contains(document.activeElement)) run(); });
    message.addEventListener("focusout", function (ev) { if (!timer && !message.contains(ev.relatedTarget)) run(); });
    run();
  }

  function setUpToasts() {
    document.querySelectorAll("#messages .message:not([data-toast])").forEach(setUpToast);
  }

  document.addEventListener("DOMContentLoaded", setUpToasts);
  document.addEventListener("htmx:afterSettle", setUpToasts);
  document.addEventListener("htmx:oobAfterSwap", setUpToasts);

  // -- the start-round form: only the chosen method's fields --------------------------------
  // form[data-method-fields] holds fieldset[data-methods="m1 m2"]: the others are hidden and
  // disabled (not sent). Without JavaScript every field shows, with a note saying which apply.

  function showMethodFields(form) {
    var select = form.querySelector("select[name=method]");
    if (!select) return;
    form.querySelectorAll("fieldset[data-methods]").forEach(function (fieldset) {
      var on = fieldset.getAttribute("data-methods").split(/\s+/).indexOf(select.value) >= 0;
      fieldset.hidden = !on;
      fieldset.disabled = !on;
    });
    var note = form.querySelector(".method-note");
    if (note) note.hidden = true;
  }

  function setUpMethodForms() {
    document.querySelectorAll("form[data-method-fields]").forEach(showMethodFields);
  }

  document.addEventListener("change", function (ev) {
    var form = ev.target.matches && ev.target.matches("select[name=method]") && ev.target.closest("form[data-method-fields]");
    if (form) showMethodFields(form);
  });
  document.addEventListener("DOMContentLoaded", setUpMethodForms);
  document.addEventListener("htmx:afterSettle", setUpMethodForms);

  // -- a button busy while its work runs ----------------------------------------------------
  // form[data-busy-label][data-busy-while=SELECTOR]: from the moment it is sent, its submit
  // button is disabled and says the busy label until nothing matches SELECTOR any more (the
  // export's job fragment stops polling, so loses its hx-trigger, when the job has ended).

  function busyForms() {
    return Array.prototype.slice.call(document.querySelectorAll("form[data-busy-label]"));
  }

  function setBusy(form, busy) {
    var button = form.querySelector("button[type=submit]");
    if (!button) return;
    if (!button.hasAttribute("data-idle-label")) button.setAttribute("data-idle-label", button.textContent);
    button.disabled = busy;
    button.setAttribute("aria-busy", busy ? "true" : "false");
    button.textContent = busy ? form.getAttribute("data-busy-label") : button.getAttribute("data-idle-label");
  }

  function updateBusy() {
    busyForms().forEach(function (form) {
      if (form.hasAttribute("data-sending")) return;
      setBusy(form, !!document.querySelector(form.getAttribute("data-busy-while")));
    });
  }

  document.addEventListener("htmx:beforeRequest", function (ev) {
    var form = ev.detail && ev.detail.elt;
    if (form && form.matches && form.matches("form[data-busy-label]")) {
      form.setAttribute("data-sending", "");
      setBusy(form, true);
    }
  });
  document.addEventListener("htmx:afterRequest", function (ev) {
    var form = ev.detail && ev.detail.elt;
    if (form && form.matches && form.matches("form[data-busy-label]")) {
      form.removeAttribute("data-sending");
      if (!ev.detail.successful) setBusy(form, false);
    }
  });
  document.addEventListener("htmx:afterSettle", function (ev) {
    updateBusy();
    var result = ev.detail && ev.detail.target;
    // The answer lands next to the button: keep it in view.
    if (result && result.matches && result.matches("[data-keep-in-view]")) result.scrollIntoView({ block: "nearest" });
  });
  document.addEventListener("DOMContentLoaded", updateBusy);
})();

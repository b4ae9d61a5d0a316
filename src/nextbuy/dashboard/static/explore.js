/* Explore: a customer's history and lists per placement; an item's neighbours. */
"use strict";
(function () {
  const params = new URLSearchParams(location.search);
  const itemCell = (id, title) => nb.el("a", { class: "item-link", href: "?item=" + encodeURIComponent(id) }, title || id);

  function recTable(list) {
    return nb.el("div", { class: "card rec-list", "data-placement": list.placement },
      nb.el("h2", {}, list.placement + " ", nb.el("span", { class: "badge" }, list.route)),
      nb.table([
        { key: "position", label: "#", num: true },
        { key: "title", label: "item", format: (v, row) => itemCell(row.item_id, v) },
        { key: "score", label: "score", num: true, format: nb.fixed(4) },
        { key: "reason", label: "reason", format: (v) => nb.el("span", { class: "reason" }, v || "") },
      ], list.items));
  }

  async function showUser(id) {
    nb.fill("item-view");
    const d = await nb.getJSON("/v1/dashboard/explore/users/" + encodeURIComponent(id));
    const item = { key: "title", label: "item", format: (v, row) => itemCell(row.item_id, v) };
    nb.fill("user-view",
      nb.el("div", { class: "card" }, nb.el("h2", {}, "Customer " + d.user_id),
        nb.facts([["in training data", d.known ? "yes" : "no (cold start)"], ["consent", d.consent ? "yes" : "no"],
          ["purchased items", nb.int(d.purchases.length)], ["events since training", nb.int(d.since_training.length)]])),
      nb.el("div", { class: "card" }, nb.el("h2", {}, "Purchases"),
        nb.table([item, { key: "times", label: "times", num: true }, { key: "last", label: "last", format: nb.when }], d.purchases)),
      nb.el("div", { class: "card" }, nb.el("h2", {}, "Strongest history"),
        nb.table([item, { key: "weight", label: "weight", num: true, format: nb.fixed(2) }], d.history)),
      nb.el("div", { class: "card" }, nb.el("h2", {}, "Since training"),
        nb.table([item, { key: "event_type", label: "event" }, { key: "at", label: "at", format: nb.when }], d.since_training)),
      d.placements.map(recTable));
  }

  async function showItem(id) {
    nb.fill("user-view");
    const d = await nb.getJSON("/v1/dashboard/explore/items/" + encodeURIComponent(id));
    const i = d.item;
    nb.fill("item-view",
      nb.el("div", { class: "card" }, nb.el("h2", {}, i.title || i.item_id),
        nb.facts([["item id", i.item_id], ["category", i.category], ["price", nb.money(i.price)],
          ["available", i.available ? "yes" : "no"], ["popularity rank", nb.int(i.popularity_rank)], ["in the model", i.in_model ? "yes" : "no (new)"]])),
      d.lists.map(recTable));
  }

  async function suggest(kind, query) {
    const d = await nb.getJSON("/v1/dashboard/explore/search?q=" + encodeURIComponent(query || ""));
    if (kind === "user" || !kind) nb.fill("user-list", d.users.map((u) => nb.el("option", { value: u.user_id }, u.items + " items")));
    if (kind === "item" || !kind) nb.fill("item-list", d.items.map((it) => nb.el("option", { value: it.item_id }, it.title || "")));
    return d;
  }

  function go(kind, value) {
    const url = new URL(location.href);
    url.search = value ? "?" + kind + "=" + encodeURIComponent(value) : "";
    history.replaceState(null, "", url);
    return kind === "user" ? showUser(value) : showItem(value);
  }

  const run = (promise) => promise.then(() => nb.showError(null), nb.showError).finally(() => { document.body.dataset.ready = "1"; });
  document.getElementById("user-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const v = document.getElementById("user-input").value.trim();
    if (v) run(go("user", v));
  });
  document.getElementById("item-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const v = document.getElementById("item-input").value.trim();
    if (v) run(go("item", v));
  });
  let timer = null;
  for (const kind of ["user", "item"]) {
    document.getElementById(kind + "-input").addEventListener("input", (e) => {
      clearTimeout(timer);
      timer = setTimeout(() => suggest(kind, e.target.value).catch(() => {}), 200);
    });
  }

  run((async () => {
    const d = await suggest(null, "");
    if (params.get("item")) {
      document.getElementById("item-input").value = params.get("item");
      return showItem(params.get("item"));
    }
    const user = params.get("user") || (d.users[0] && d.users[0].user_id);
    if (user) {
      document.getElementById("user-input").value = user;
      return showUser(user);
    }
  })());
})();

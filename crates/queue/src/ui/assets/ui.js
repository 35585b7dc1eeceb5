// backstop's dashboard: live updates without a framework.
//
// A page keeps what changes by itself in #live. Every few seconds that part
// is fetched again and replaced, unless the reader is busy in it (an output
// opened, a field in use) or the tab is hidden. A session that has ended
// sends the page to the sign-in page.
"use strict";
(function () {
  const EVERY_MS = 2000;
  const live = document.getElementById("live");
  if (!live) {
    return;
  }
  function busy() {
    const active = document.activeElement;
    return (
      document.hidden ||
      live.querySelector("details[open]") !== null ||
      (active !== null && active !== document.body && live.contains(active))
    );
  }
  async function refresh() {
    if (busy()) {
      return;
    }
    let answer;
    try {
      answer = await fetch(window.location.href, {
        credentials: "same-origin",
        headers: { Accept: "text/html" },
      });
    } catch (e) {
      live.classList.add("stale");
      return;
    }
    if (answer.redirected) {
      window.location.assign(answer.url);
      return;
    }
    if (!answer.ok) {
      live.classList.add("stale");
      return;
    }
    const page = new DOMParser().parseFromString(await answer.text(), "text/html");
    const fresh = page.getElementById("live");
    if (fresh === null || busy()) {
      return;
    }
    live.replaceChildren(...Array.from(fresh.childNodes, (n) => document.importNode(n, true)));
    live.classList.remove("stale");
  }
  window.setInterval(refresh, EVERY_MS);
})();

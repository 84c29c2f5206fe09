// rulebus console: the few things a plain HTML page cannot do by itself.
// Every page works without it; with it, parts refresh and the tail streams.
"use strict";

// <div data-refresh="URL" data-every="SECONDS">: its content reloaded from URL.
for (const part of document.querySelectorAll("[data-refresh]")) {
  const every = 1000 * Number(part.dataset.every || 5);
  setInterval(async () => {
    const response = await fetch(part.dataset.refresh, { credentials: "same-origin" });
    if (response.ok && !response.redirected) part.innerHTML = await response.text();
  }, every);
}

// <ol data-stream="URL">: one item per server-sent event, newest first, at most 200.
for (const list of document.querySelectorAll("[data-stream]")) {
  const source = new EventSource(list.dataset.stream);
  const status = document.getElementById("tail-status");
  source.onopen = () => { if (status) status.textContent = "streaming"; };
  source.onerror = () => { if (status) status.textContent = "disconnected, retrying"; };
  source.onmessage = (message) => {
    const event = JSON.parse(message.data);
    const item = document.createElement("li");
    const link = document.createElement("a");
    link.href = list.dataset.events + "/" + encodeURIComponent(event.id);
    link.textContent = event.id;
    const body = document.createElement("code");
    // textContent, never innerHTML: payloads are untrusted.
    body.textContent = " " + event.topic + " " + JSON.stringify(event.payload);
    item.append(link, body);
    list.prepend(item);
    while (list.children.length > 200) list.lastElementChild.remove();
  };
}

/* freshrec browser SDK — served by the API at /sdk.js; no build step, no dependencies.
 *
 *   <script src="https://api.example/sdk.js"></script>
 *   const fr = freshrec.init({ api: "https://api.example" });   // userId: optional
 *   fr.view("sku-7", { category_id: "shoes" });  fr.addToCart("sku-7");  fr.purchase("sku-7");
 *   fr.recommend(document.querySelector("#recs"), { k: 6, describe: id => catalogue[id] });
 *
 * Events are queued (kept in localStorage, so a reload or a failed send loses nothing), sent
 * in batches to POST /v1/events, and with sendBeacon when the page is hidden. Each event gets
 * its event_id when tracked; a retry sends the same id, so the dataflow keeps one copy.
 */
(function (global) {
  "use strict";
  var VERSION = "1";
  var STORE = "freshrec.";
  var MAX_QUEUE = 1000;
  var TEXT_MAX = 2048;
  // Browsers refuse keepalive fetches and beacons over 64 KiB (all in flight together).
  var BODY_MAX = 60000;

  function storage(kind) {
    try { var s = global[kind]; s.setItem(STORE + "probe", "1"); s.removeItem(STORE + "probe"); return s; }
    catch (e) { return null; } // private mode, blocked storage: keep going in memory
  }
  function uuid() {
    if (global.crypto && crypto.randomUUID) return crypto.randomUUID().replace(/-/g, "");
    var out = "";
    for (var i = 0; i < 32; i++) out += Math.floor(Math.random() * 16).toString(16);
    return out;
  }
  // The oldest events whose JSON array stays within BODY_MAX (at least one).
  function take(queue) {
    var size = 2, out = [];
    for (var i = 0; i < queue.length && out.length < 500; i++) {
      size += JSON.stringify(queue[i]).length + 1;
      if (out.length && size > BODY_MAX) break;
      out.push(queue[i]);
    }
    return out;
  }
  function remembered(store, key, make) {
    var value = store && store.getItem(STORE + key);
    if (!value) { value = make(); if (store) store.setItem(STORE + key, value); }
    return value;
  }
  // Ids and texts must be printable (no control characters) and bounded, as the API checks.
  function text(value, max) {
    return value == null ? undefined : String(value).replace(/[\u0000-\u001f\u007f-\u009f]/g, " ").slice(0, max);
  }

  function Tracker(options) {
    this.api = (options.api || "").replace(/\/+$/, "");
    this.batchSize = options.batchSize || 20;
    this.flushMs = options.flushMs || 1000;
    this.local = storage("localStorage");
    this.session = storage("sessionStorage");
    this.anonymousId = remembered(this.local, "anonymous_id", function () { return "anon-" + uuid(); });
    this.userId = options.userId || this.anonymousId;
    this.sessionId = remembered(this.session, "session_id", function () { return "s-" + uuid(); });
    this.queue = this._load();
    this.inFlight = null;
    this.retryAt = 0;
    this.failures = 0;
    this.seenImpressions = {};
    var self = this;
    if (global.document) {
      document.addEventListener("visibilitychange", function () {
        if (document.visibilityState === "hidden") self.beacon();
      });
      global.addEventListener("pagehide", function () { self.beacon(); });
    }
    this.timer = setInterval(function () { self.flush(); }, this.flushMs);
    if (this.queue.length) this.flush(); // what a previous page could not send
  }

  Tracker.prototype._load = function () {
    try { return JSON.parse((this.local && this.local.getItem(STORE + "queue")) || "[]"); }
    catch (e) { return []; }
  };
  Tracker.prototype._save = function () {
    if (this.local) this.local.setItem(STORE + "queue", JSON.stringify(this.queue));
  };
  Tracker.prototype._context = function () {
    return {
      user_agent: text(navigator.userAgent, TEXT_MAX),
      page: text(location.href, TEXT_MAX),
      referrer: text(document.referrer, TEXT_MAX) || undefined,
    };
  };

  /** Queue one event; `extra` may carry category_id, recommendation_id or context fields. */
  Tracker.prototype.track = function (type, itemId, extra) {
    extra = extra || {};
    var event = {
      event_id: uuid(),
      user_id: this.userId,
      item_id: text(itemId, 128),
      type: type,
      ts: new Date().toISOString(),
      session_id: this.sessionId,
      context: Object.assign(this._context(), extra.context || {}),
    };
    if (extra.category_id) event.category_id = text(extra.category_id, 128);
    if (extra.recommendation_id) event.recommendation_id = extra.recommendation_id;
    this.queue.push(event);
    if (this.queue.length > MAX_QUEUE) this.queue.splice(0, this.queue.length - MAX_QUEUE);
    this._save();
    if (this.queue.length >= this.batchSize) this.flush();
    return event.event_id;
  };
  Tracker.prototype.view = function (itemId, extra) { return this.track("view", itemId, extra); };
  Tracker.prototype.addToCart = function (itemId, extra) { return this.track("add_to_cart", itemId, extra); };
  Tracker.prototype.purchase = function (itemId, extra) { return this.track("purchase", itemId, extra); };

  /** Send what is queued; resolves when the API answered (or the send failed; it is retried). */
  Tracker.prototype.flush = function () {
    var self = this;
    if (this.inFlight) return this.inFlight.then(function () { return self.queue.length && self.flush(); });
    if (!this.queue.length || Date.now() < this.retryAt) return Promise.resolve();
    var batch = take(this.queue);
    this.inFlight = fetch(this.api + "/v1/events", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(batch),
      keepalive: true,
    }).then(function (response) {
      if (response.status === 429 || response.status >= 500) {
        var after = Number(response.headers.get("retry-after"));
        throw new Error("HTTP " + response.status + (after > 0 ? ":" + after : ""));
      }
      // 202, or 422 (valid ones accepted, the rest dead-lettered), or another 4xx the same
      // batch would get again: either way these events are done.
      if (!response.ok && global.console) response.text().then(function (t) { console.warn("freshrec:", response.status, t); });
      self._done(batch);
    }).catch(function (error) {
      self.failures += 1;
      var hinted = /:(\d+(\.\d+)?)$/.exec(String(error && error.message));
      var backoff = hinted ? 1000 * Number(hinted[1]) : Math.min(30000, 500 * Math.pow(2, self.failures));
      self.retryAt = Date.now() + backoff; // same events, same ids, later
    }).then(function () { self.inFlight = null; });
    return this.inFlight;
  };
  Tracker.prototype._done = function (batch) {
    var sent = {};
    batch.forEach(function (e) { sent[e.event_id] = true; });
    this.queue = this.queue.filter(function (e) { return !sent[e.event_id]; });
    this.failures = 0;
    this.retryAt = 0;
    this._save();
  };

  /** The page is going away: hand the queue to the browser (text/plain: no CORS preflight). */
  Tracker.prototype.beacon = function () {
    if (!this.queue.length || !navigator.sendBeacon) return false;
    var batch = take(this.queue);
    var blob = new Blob([JSON.stringify(batch)], { type: "text/plain;charset=UTF-8" });
    if (!navigator.sendBeacon(this.api + "/v1/events", blob)) return false; // kept for next time
    this._done(batch);
    return true;
  };

  /** The user's recommendations (the API's answer), without rendering them. */
  Tracker.prototype.recommendations = function (k) {
    var url = this.api + "/v1/users/" + encodeURIComponent(this.userId) + "/recommendations?k=" + (k || 6);
    return fetch(url).then(function (response) {
      if (!response.ok) throw new Error("recommendations: HTTP " + response.status);
      return response.json();
    });
  };
  /** Render an answer into `element` (and track its impressions once). */
  Tracker.prototype.render = function (element, recs, options) {
    options = options || {};
    render(this, element, recs, options.describe || function () { return null; }, options.onClick);
  };
  /** Fetch recommendations and render them into `element`; resolves with the API's answer. */
  Tracker.prototype.recommend = function (element, options) {
    var self = this;
    options = options || {};
    return this.recommendations(options.k).then(function (recs) {
      self.render(element, recs, options);
      return recs;
    });
  };

  function titleOf(describe, itemId) {
    var item = describe(itemId);
    return (item && item.title) || itemId;
  }
  function reasonText(describe, reason) {
    var viewed = /^because you viewed (.+)$/.exec(reason);
    return viewed ? "because you viewed " + titleOf(describe, viewed[1]) : reason;
  }
  function render(tracker, element, recs, describe, onClick) {
    var list = document.createElement("ol");
    list.className = "fr-recs";
    recs.items.forEach(function (rec) {
      var li = document.createElement("li");
      li.className = "fr-rec";
      li.dataset.itemId = rec.item_id;
      var title = document.createElement("a");
      title.className = "fr-title";
      title.href = "#";
      title.textContent = titleOf(describe, rec.item_id);
      var reason = document.createElement("span");
      reason.className = "fr-reason";
      reason.textContent = reasonText(describe, rec.reason);
      li.appendChild(title);
      li.appendChild(reason);
      li.addEventListener("click", function (event) {
        event.preventDefault();
        tracker.track("rec_click", rec.item_id, { recommendation_id: recs.recommendation_id });
        if (onClick) onClick(rec);
      });
      list.appendChild(li);
      var seen = recs.recommendation_id + "/" + rec.item_id;
      if (!tracker.seenImpressions[seen]) {
        tracker.seenImpressions[seen] = true;
        tracker.track("rec_impression", rec.item_id, { recommendation_id: recs.recommendation_id });
      }
    });
    element.replaceChildren(list);
    element.dataset.recommendationId = recs.recommendation_id;
  }

  global.freshrec = {
    version: VERSION,
    init: function (options) { return new Tracker(options || {}); },
  };
})(window);

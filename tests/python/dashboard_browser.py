#!/usr/bin/env python3
"""Drives the broker's dashboard in a real headless Chromium over the DevTools protocol.

Used by tests/broker/dashboard_browser_test.cpp, which starts a real 3-member run and
asserts on what this prints. It does what a person would: opens the page with the operator
link the broker printed, waits for the members, the loss chart and the event log, watches
them update, pauses and resumes rounds and evicts a member with real mouse clicks, looks at
the page at phone width, and takes a screenshot.

    dashboard_browser.py URL TOKEN --evict MEMBER_ID [--screenshot PNG] [--timeout S]

Prints one JSON object (the observations) on stdout; exits 0 when it could observe, 1 (with
the reason in "error") when a step timed out. Chromium's own noise goes to stderr.
"""
import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

import websocket  # python3-websocket (Debian)


class Page:
    """A page target of Chromium, spoken to over its DevTools WebSocket."""

    def __init__(self, ws_url):
        self.ws = websocket.create_connection(ws_url, timeout=30, suppress_origin=True)
        self.next_id = 0
        self.errors = []  # uncaught exceptions and console errors of the page

    def call(self, method, **params):
        self.next_id += 1
        my_id = self.next_id
        self.ws.send(json.dumps({"id": my_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == my_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self._event(msg)

    def _event(self, msg):
        method = msg.get("method", "")
        p = msg.get("params", {})
        if method == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            self.errors.append("exception: " + d.get("exception", {}).get("description", d.get("text", "?")))
        elif method == "Runtime.consoleAPICalled" and p.get("type") == "error":
            self.errors.append("console.error: " + " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
        elif method == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            e = p["entry"]
            # A request the test makes fail on purpose shows up here too; keep only page errors.
            if e.get("source") != "network":
                self.errors.append("log: " + e.get("text", "?"))

    def js(self, expression):
        r = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"evaluating {expression[:80]}: {r['exceptionDetails'].get('text')}")
        return r.get("result", {}).get("value")

    def wait_for(self, expression, timeout, what):
        end = time.time() + timeout
        last = None
        while time.time() < end:
            try:
                v = self.js(expression)
                if v:
                    return v
            except RuntimeError as e:  # the page is (re)loading: its elements are not there yet
                last = e
            time.sleep(0.25)
        raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}" + (f" (last: {last})" if last else ""))

    def click(self, selector):
        """A real mouse click (pressed + released) at the middle of the element."""
        rect = self.js(f"""(() => {{ const e = document.querySelector({json.dumps(selector)});
            if (!e) return null; e.scrollIntoView({{block: 'center'}}); const r = e.getBoundingClientRect();
            return {{x: r.x + r.width / 2, y: r.y + r.height / 2, w: r.width}}; }})()""")
        if not rect or rect["w"] == 0:
            raise RuntimeError(f"nothing visible to click at {selector}")
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=rect["x"], y=rect["y"], button="left", clickCount=1)


# What the page shows, read from its DOM. The loss chart counts the pixels drawn in the loss
# line's colour (#2a6fdb), so "non-empty" means drawn, not just data received.
OBSERVE = """(() => {
  const rows = [...document.querySelectorAll('#members tbody tr')];
  const cards = Object.fromEntries([...document.querySelectorAll('#summary .card')].map(
      c => [c.querySelector('.k').textContent, c.querySelector('.v').textContent]));
  const canvas = document.getElementById('chart-loss');
  let drawn = 0;
  if (canvas.width > 0) {
    const d = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    for (let i = 0; i < d.length; i += 4)
      if (d[i + 3] > 200 && Math.abs(d[i] - 42) < 30 && Math.abs(d[i + 1] - 111) < 30 && Math.abs(d[i + 2] - 219) < 30) drawn++;
  }
  return {
    active_members: rows.filter(r => r.cells[4].textContent.startsWith('active')).map(r => Number(r.cells[0].textContent)),
    member_rows: rows.length,
    round: Number((cards['round'] || '-1').split(' ')[0]),
    state: cards['state'] || '',
    loss: cards['loss'] || '',
    loss_points: Number(canvas.dataset.points),
    loss_pixels: drawn,
    time_points: Number(document.getElementById('chart-time').dataset.points),
    bytes_points: Number(document.getElementById('chart-bytes').dataset.points),
    events: [...document.querySelectorAll('#events li')].map(li => li.dataset.kind),
    event_text: [...document.querySelectorAll('#events li')].slice(0, 40).map(li => li.textContent),
    role: document.getElementById('role').textContent,
    conn: document.getElementById('conn').textContent,
  };
})()"""


def start_chromium(profile):
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        raise RuntimeError("no chromium on PATH (Debian package chromium)")
    proc = subprocess.Popen(
        [exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
         "--remote-debugging-port=0", "--remote-allow-origins=*", f"--user-data-dir={profile}",
         "--window-size=1280,1000", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=sys.stderr)
    port_file = os.path.join(profile, "DevToolsActivePort")
    end = time.time() + 60
    while time.time() < end:
        if os.path.exists(port_file):
            lines = open(port_file).read().split()
            if lines:
                port = int(lines[0])
                for _ in range(100):
                    try:
                        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5))
                        pages = [t for t in targets if t.get("type") == "page"]
                        if pages:
                            return proc, pages[0]["webSocketDebuggerUrl"]
                    except OSError:
                        pass
                    time.sleep(0.1)
        if proc.poll() is not None:
            raise RuntimeError(f"chromium exited with {proc.returncode}")
        time.sleep(0.1)
    raise RuntimeError("chromium did not open its DevTools port within 60 s")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("token")
    ap.add_argument("--evict", type=int, required=True, help="member id to evict from the page")
    ap.add_argument("--screenshot", default="")
    ap.add_argument("--timeout", type=float, default=60)
    a = ap.parse_args()

    out = {"errors": []}
    profile = tempfile.mkdtemp(prefix="pico-chromium-")
    proc = None
    try:
        proc, ws_url = start_chromium(profile)
        page = Page(ws_url)
        for domain in ("Page", "Runtime", "Log"):
            page.call(f"{domain}.enable")
        page.call("Emulation.setDeviceMetricsOverride", width=1280, height=1000, deviceScaleFactor=1, mobile=False)
        page.call("Page.navigate", url=a.url + "#token=" + a.token)
        t = a.timeout
        page.wait_for("document.readyState === 'complete'", t, "the page to load")
        out["token_left_in_url"] = a.token in page.js("location.href")

        # Members, a drawn loss chart and the event log appear.
        first = page.wait_for(f"(() => {{ const o = {OBSERVE}; return o.active_members.length >= 3 && o.loss_pixels > 20 "
                              f"&& o.events.filter(k => k === 'join').length >= 3 ? o : null; }})()",
                              t, "3 members, a drawn loss chart and 3 joins in the event log")
        out["first"] = first
        # ... and update: more rounds, more events.
        later = page.wait_for(f"(() => {{ const o = {OBSERVE}; return o.round >= {first['round']} + 2 "
                              f"&& o.events.length > {len(first['events'])} ? o : null; }})()",
                              t, "the round count and the event log to move on")
        out["later"] = later

        # Operator: the link's token unlocked the page; pause, watch rounds stop, resume.
        page.wait_for("document.getElementById('role').textContent === 'operator'", t, "operator mode")
        page.click("#pause")
        paused = page.wait_for(f"(() => {{ const o = {OBSERVE}; return o.events.includes('paused') "
                               f"&& o.state.startsWith('paused') ? o : null; }})()", t, "the run to show paused")
        time.sleep(3)  # rounds must not go on (one already in flight may finish)
        held = page.js(OBSERVE)
        out["paused"] = {"at": paused["round"], "after_3s": held["round"], "state": held["state"]}
        page.click("#resume")
        resumed = page.wait_for(f"(() => {{ const o = {OBSERVE}; return o.events.includes('resumed') "
                                f"&& o.round >= {held['round']} + 2 ? o : null; }})()", t, "rounds to resume")
        out["resumed_round"] = resumed["round"]

        # Evict a member: two clicks on its row's button (the second confirms).
        sel = f"#members tbody tr[data-member='{a.evict}'] button"
        page.click(sel)
        page.wait_for(f"document.querySelector({json.dumps(sel)}).textContent === 'Confirm evict'", t, "the confirm step")
        page.click(sel)
        evicted = page.wait_for(f"(() => {{ const o = {OBSERVE}; return o.events.includes('evict') "
                                f"&& !o.active_members.includes({a.evict}) ? o : null; }})()", t, "the eviction")
        out["evicted"] = {"active_members": evicted["active_members"],
                          "event": next((x for x in evicted["event_text"] if "evict" in x), "")}

        # A read-only visitor (no token) sees no operator controls.
        page.js("sessionStorage.clear()")
        page.call("Page.navigate", url=a.url + "?read-only")  # another URL: a real navigation, not a hash change
        page.wait_for(f"(() => {{ const o = {OBSERVE}; return o.member_rows > 0 ? o : null; }})()", t, "a read-only reload")
        out["read_only"] = page.js("""(() => ({role: document.getElementById('role').textContent,
            pause_visible: document.getElementById('pause').offsetParent !== null,
            evict_buttons_visible: [...document.querySelectorAll('#members button')].filter(b => b.offsetParent).length}))()""")

        # Phone width: nothing wider than the screen but the tables' own scroll boxes.
        page.call("Emulation.setDeviceMetricsOverride", width=390, height=844, deviceScaleFactor=2, mobile=True)
        time.sleep(1.5)
        out["phone"] = page.js("({scroll_width: document.documentElement.scrollWidth, width: window.innerWidth, "
                               "chart_width: document.getElementById('chart-loss').clientWidth})")
        page.call("Emulation.setDeviceMetricsOverride", width=1280, height=1000, deviceScaleFactor=1, mobile=False)

        if a.screenshot:
            time.sleep(1.5)
            height = page.js("document.documentElement.scrollHeight")
            page.call("Emulation.setDeviceMetricsOverride", width=1280, height=int(height), deviceScaleFactor=1, mobile=False)
            time.sleep(1.2)
            shot = page.call("Page.captureScreenshot", format="png")
            with open(a.screenshot, "wb") as f:
                f.write(base64.b64decode(shot["data"]))
            out["screenshot"] = a.screenshot
        out["errors"] = page.errors
        print(json.dumps(out))
        return 0
    except Exception as e:  # report what was seen up to here
        out["error"] = f"{type(e).__name__}: {e}"
        print(json.dumps(out))
        return 1
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

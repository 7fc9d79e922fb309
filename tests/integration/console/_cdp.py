"""A real headless Chromium, driven over the Chrome DevTools Protocol with ``websockets`` (already a dependency).

No WebDriver: the browser is Debian's ``chromium``, started with ``--remote-debugging-port=0``; this module reads the
DevTools address it prints, opens one WebSocket to it, and speaks CDP (JSON commands with ids, events with a
``sessionId`` per page, "flat" sessions). What a test needs:

* :meth:`Browser.page` opens a tab, in its own browser context (its own cookies) when asked: two supervisors side by
  side;
* :meth:`Page.goto`, :meth:`Page.eval` (``Runtime.evaluate``, awaiting promises), :meth:`Page.wait_for` (a
  ``MutationObserver`` in the page resolves when a JavaScript condition holds: no polling, and the browser's own
  ``Date.now()`` of that moment comes back with it), :meth:`Page.type` (``Input.insertText``, as typing does),
  :meth:`Page.click` (``Input.dispatchMouseEvent`` at the element's centre, a real click);
* what the page saw: console messages, uncaught exceptions, CSP violations and other browser log entries
  (``page.problems``; failed requests apart, in ``page.network_errors``), every server-sent event received
  (``page.sse``, from ``Network.eventSourceMessageReceived``), every request URL (``page.urls``), cookies with
  their flags (``Network.getCookies``), screenshots.

Chromium is stopped by its own pid.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import tempfile
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import websockets

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
_LISTENING = re.compile(r"DevTools listening on (ws://\S+)")


class CDPError(RuntimeError):
    pass


class Browser:
    def __init__(self, width: int = 1400, height: int = 1000, args: tuple[str, ...] = ()) -> None:
        """``args``: more Chromium switches (a fake microphone: ``--use-fake-device-for-media-stream`` ...)."""
        self.width, self.height, self.args = width, height, args
        self.proc: asyncio.subprocess.Process | None = None
        self._ws: Any = None
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._listeners: list[Callable[[dict[str, Any]], None]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._profile = tempfile.TemporaryDirectory(prefix="callbridge-chromium-")
        self.stderr: deque[str] = deque(maxlen=200)

    async def __aenter__(self) -> Browser:
        assert CHROMIUM is not None, "no chromium on PATH"
        args = [
            CHROMIUM, "--headless=new", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
            "--disable-extensions", "--disable-background-networking", "--disable-sync", "--mute-audio",
            "--autoplay-policy=no-user-gesture-required",  # Web Audio runs (muted) even without a gesture
            "--remote-debugging-port=0", f"--user-data-dir={self._profile.name}",
            f"--window-size={self.width},{self.height}", *self.args, "about:blank",
        ]  # fmt: skip
        if os.geteuid() == 0:
            args.insert(1, "--no-sandbox")  # Chromium refuses to sandbox itself as root
        self.proc = await asyncio.create_subprocess_exec(
            *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
        )
        found: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._tasks.append(asyncio.create_task(self._drain_stderr(found)))
        try:
            url = await asyncio.wait_for(found, 30)
        except BaseException:
            await self.__aexit__()
            raise
        self._ws = await websockets.connect(url, max_size=None, ping_interval=None)
        self._tasks.append(asyncio.create_task(self._read()))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self.send("Browser.close")
            with contextlib.suppress(Exception):
                await self._ws.close()
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._profile.cleanup()

    async def _drain_stderr(self, found: asyncio.Future[str]) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        async for raw in self.proc.stderr:  # read it all: a full pipe would stall Chromium
            line = raw.decode(errors="replace").rstrip()
            self.stderr.append(line)
            match = _LISTENING.search(line)
            if match and not found.done():
                found.set_result(match.group(1))
        if not found.done():
            found.set_exception(RuntimeError("chromium exited: " + "\n".join(self.stderr)))

    async def _read(self) -> None:
        async for raw in self._ws:
            msg = json.loads(raw)
            if "id" in msg:
                fut = self._waiting.pop(msg["id"], None)
                if fut is not None and not fut.done():
                    if "error" in msg:
                        fut.set_exception(CDPError(f"{msg['error']}"))
                    else:
                        fut.set_result(msg.get("result", {}))
            else:
                for listener in list(self._listeners):
                    listener(msg)

    async def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> Any:
        msg_id = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[msg_id] = fut
        msg: dict[str, Any] = {"id": msg_id, "method": method, "params": params or {}}
        if session is not None:
            msg["sessionId"] = session
        await self._ws.send(json.dumps(msg))
        return await asyncio.wait_for(fut, 60)

    async def page(self, *, own_context: bool = False, new_window: bool = False) -> Page:
        """A new tab; ``own_context``: in a fresh browser context (cookies of its own, like a second browser);
        ``new_window``: in a window of its own, so that it and the tabs before it are all in view (a tab behind
        another is hidden: no animation frames, timers slowed)."""
        params: dict[str, Any] = {"url": "about:blank"}
        if new_window:  # only when asked: a new tab without a window open yet fails if it is named at all
            params["newWindow"] = True
        if own_context:
            params["browserContextId"] = (await self.send("Target.createBrowserContext"))["browserContextId"]
        target = (await self.send("Target.createTarget", params))["targetId"]
        session = (await self.send("Target.attachToTarget", {"targetId": target, "flatten": True}))["sessionId"]
        page = Page(self, session)
        self._listeners.append(page._on_event)
        for domain in ("Page", "Runtime", "Network", "Log"):
            await page.send(f"{domain}.enable")
        await page.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": self.width, "height": self.height, "deviceScaleFactor": 1, "mobile": False},
        )
        return page


class Page:
    def __init__(self, browser: Browser, session: str) -> None:
        self.browser = browser
        self.session = session
        self.problems: list[str] = []  # console errors, exceptions, CSP violations, failed loads
        self.console: list[str] = []
        self.network_errors: list[str] = []
        self.sse: list[dict[str, Any]] = []  # {"event", "data"} of every server-sent event received
        self.urls: list[str] = []
        self._loaded = asyncio.Event()

    def _on_event(self, msg: dict[str, Any]) -> None:
        if msg.get("sessionId") != self.session:
            return
        method, params = msg.get("method"), msg.get("params", {})
        if method == "Page.loadEventFired":
            self._loaded.set()
        elif method == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            self.console.append(f"{params.get('type')}: {text}")
            if params.get("type") in ("error", "assert"):
                self.problems.append(f"console.{params.get('type')}: {text}")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self.problems.append(f"exception: {details.get('exception', {}).get('description') or details.get('text')}")
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            if entry.get("source") == "network":  # a refused request (401, 403) the test asked for
                self.network_errors.append(str(entry.get("text")))
            elif entry.get("level") in ("error", "warning"):
                self.problems.append(f"log {entry.get('source')}/{entry.get('level')}: {entry.get('text')}")
        elif method == "Network.eventSourceMessageReceived":
            self.sse.append({"event": params.get("eventName"), "data": params.get("data")})
        elif method == "Network.requestWillBeSent":
            self.urls.append(str(params.get("request", {}).get("url", "")))

    async def send(self, method: str, params: dict[str, Any] | None = None) -> Any:
        return await self.browser.send(method, params, self.session)

    async def goto(self, url: str) -> None:
        self._loaded.clear()
        result = await self.send("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise CDPError(f"navigation to {url} failed: {result['errorText']}")
        await asyncio.wait_for(self._loaded.wait(), 30)

    async def reload(self) -> None:
        self._loaded.clear()
        await self.send("Page.reload", {"ignoreCache": True})
        await asyncio.wait_for(self._loaded.wait(), 30)

    async def eval_then_load(self, expression: str) -> None:
        """Runs ``expression``, which makes the page load again (a setting that reloads it), and waits for the load."""
        self._loaded.clear()
        await self.eval(f"setTimeout(() => {{ {expression}; }}, 0)")
        await asyncio.wait_for(self._loaded.wait(), 30)

    async def eval(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (a promise is awaited)."""
        result = await self.send(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True}
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise CDPError(f"{expression[:80]!r}: {details.get('exception', {}).get('description') or details}")
        return result.get("result", {}).get("value")

    async def wait_for(self, condition: str, timeout: float = 10.0) -> tuple[Any, float]:  # noqa: ASYNC109
        """Waits until the JavaScript expression ``condition`` is truthy, checked on every DOM change. Returns its
        value and the page's ``Date.now() / 1000`` at the change that made it so. TimeoutError after ``timeout``."""
        js = f"""new Promise((resolve) => {{
            const test = () => {{ try {{ return ({condition}); }} catch (e) {{ return undefined; }} }};
            let done = false;
            const finish = (value) => {{ if (!done) {{ done = true; observer.disconnect(); clearTimeout(timer);
                resolve({{value, at: Date.now() / 1000}}); }} }};
            const observer = new MutationObserver(() => {{ const v = test(); if (v) finish(v); }});
            observer.observe(document, {{subtree: true, childList: true, characterData: true, attributes: true}});
            const timer = setTimeout(() => {{ done = true; observer.disconnect(); resolve(null); }}, {timeout * 1000});
            const first = test(); if (first) finish(first);
        }})"""
        found = await self.eval(js)
        if found is None:
            raise TimeoutError(f"not true after {timeout} s: {condition}")
        return found["value"], float(found["at"])

    async def type(self, selector: str, text: str) -> None:
        await self.eval(f"(() => {{ const el = document.querySelector({json.dumps(selector)}); el.focus(); "
                        "if (el.select) el.select(); return true; })()")  # fmt: skip
        await self.send("Input.insertText", {"text": text})

    async def click(self, selector: str) -> None:
        """A real mouse click at the middle of the element. The point is taken again while something else is on
        top of it (a panel above that loaded late moved the page): a user aims at what they see, too."""
        box: dict[str, float] | None = None
        for _ in range(40):
            box = await self.eval(
                f"(() => {{ const el = document.querySelector({json.dumps(selector)});"
                " el.scrollIntoView({block: 'center'}); const r = el.getBoundingClientRect();"
                " const x = r.x + r.width / 2, y = r.y + r.height / 2;"
                " return el.contains(document.elementFromPoint(x, y)) ? {x, y} : null; })()"
            )
            if box is not None:
                break
            await asyncio.sleep(0.05)
        assert box is not None, f"{selector} stayed covered"
        for kind in ("mousePressed", "mouseReleased"):
            await self.send(
                "Input.dispatchMouseEvent",
                {"type": kind, "x": box["x"], "y": box["y"], "button": "left", "clickCount": 1},
            )

    async def text(self, selector: str) -> str:
        return str(await self.eval(f"document.querySelector({json.dumps(selector)})?.textContent ?? ''"))

    async def cookies(self) -> list[dict[str, Any]]:
        return list((await self.send("Network.getCookies"))["cookies"])

    async def set_cookie(self, cookie: dict[str, Any]) -> None:
        result = await self.send("Network.setCookie", cookie)
        assert result.get("success", True), result

    async def screenshot(self, path: Path, *, full_page: bool = False) -> bytes:
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            root = "document.documentElement"
            size = await self.eval(f"({{width: {root}.scrollWidth, height: {root}.scrollHeight}})")
            params |= {"captureBeyondViewport": True, "clip": {"x": 0, "y": 0, **size, "scale": 1}}
        data = base64.b64decode((await self.send("Page.captureScreenshot", params))["data"])
        path.write_bytes(data)
        return data

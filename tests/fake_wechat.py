"""A fake WeChat API server on loopback: stable_token, custom send, template send, bizsend,
user info and menu create. Errors, latency and quotas can be injected; everything received
is recorded. Tests use it in-process; `python main.py fake-wechat` runs it for the demo and
prints each push, so a newcomer sees what residents would get.

Control from another process (the kill test, the demo): GET /fake/received,
GET /fake/delivered?id=<client_msg_id>, POST /fake/config with JSON
{"latency": s, "fail": {"custom": [45015, ...]}, "quota_per_minute": n, "expire_tokens": true,
 "closed_window": ["openid", ...]}, POST /fake/reset.
"""
from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable

from aiohttp import web

KINDS = {"/cgi-bin/message/custom/send": "custom", "/cgi-bin/message/template/send": "template",
         "/cgi-bin/message/subscribe/bizsend": "subscribe", "/cgi-bin/menu/create": "menu",
         "/cgi-bin/user/info": "user_info"}


@dataclass
class Received:
    kind: str  # custom, template, subscribe, menu, user_info
    openid: str
    body: dict
    at: float
    client_id: str = ""

    @property
    def text(self) -> str:
        if self.kind == "custom":
            return (self.body.get("text") or {}).get("content", "")
        data = self.body.get("data") or {}
        return " | ".join(str(v.get("value", "")) for v in data.values())


@dataclass
class FakeWeChat:
    appid: str | None = None  # None: any appid gets a token
    token_ttl: int = 7200
    latency: float = 0.0  # seconds before answering any send
    # Per-minute quota per send kind (45011 past it) and per-day (45009); 0 = unlimited.
    quota_per_minute: int = 0
    quota_per_day: int = 0
    # openids whose customer-service window is closed (45015).
    closed_window: set[str] = field(default_factory=set)
    # Scripted error codes per kind, used first in, first out: {"custom": [45015, -1]}.
    fail: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    # Persistent refusals for one resident: {("subscribe", "openid"): 43101}.
    fail_for: dict[tuple[str, str], int] = field(default_factory=dict)
    on_receive: Callable[[Received], None] | None = None
    # Recorded
    received: list[Received] = field(default_factory=list)
    token_requests: int = 0
    tokens: dict[str, float] = field(default_factory=dict)  # token -> expiry
    current: str = ""
    refused: list[tuple[str, int]] = field(default_factory=list)  # (kind, code)
    # Sends tagged with a client_msg_id are recorded on arrival (before any latency), so
    # /fake/delivered is exact; a repeat of a seen id is accepted but not shown twice, and
    # listed here: tests assert it stays empty (the dispatcher must not lean on it).
    seen_ids: set[str] = field(default_factory=set)
    duplicates: list[str] = field(default_factory=list)
    _minute: dict[tuple[str, int], int] = field(default_factory=lambda: defaultdict(int))
    _day: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    url: str = ""

    # ------------------------------------------------------------------ controls

    def expire_tokens(self) -> None:
        """Every token issued so far is rejected with 42001 from now on."""
        for t in self.tokens:
            self.tokens[t] = 0.0

    def reset(self) -> None:
        self.received.clear()
        self.refused.clear()
        self.seen_ids.clear()
        self.duplicates.clear()
        self.fail_for.clear()
        self.fail.clear()
        self.closed_window.clear()
        self.token_requests = 0
        self.latency = 0.0
        self.quota_per_minute = self.quota_per_day = 0
        self._minute.clear()
        self._day.clear()

    def sends(self, kind: str | None = None) -> list[Received]:
        return [r for r in self.received if r.kind in ("custom", "template", "subscribe")
                and (kind is None or r.kind == kind)]

    def per_openid(self) -> dict[str, int]:
        counts: dict[str, int] = defaultdict(int)
        for r in self.sends():
            counts[r.openid] += 1
        return dict(counts)

    # ------------------------------------------------------------------ the app

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/cgi-bin/stable_token", self._stable_token)
        for path in KINDS:
            app.router.add_route("*", path, self._api)
        app.router.add_get("/fake/received", self._received)
        app.router.add_get("/fake/delivered", self._delivered)
        app.router.add_post("/fake/config", self._config)
        app.router.add_post("/fake/reset", self._reset)
        return app

    @staticmethod
    def _error(code: int, msg: str = "") -> web.Response:
        return web.json_response({"errcode": code, "errmsg": msg or f"fake error {code}"})

    async def _stable_token(self, request: web.Request) -> web.Response:
        self.token_requests += 1
        body = await request.json()
        if self.appid and body.get("appid") != self.appid:
            return self._error(40013, "invalid appid")
        now = time.time()
        valid = self.current and self.tokens.get(self.current, 0) > now
        if body.get("force_refresh") or not valid:
            self.current = secrets.token_hex(16)
            self.tokens[self.current] = now + self.token_ttl
        return web.json_response({"access_token": self.current,
                                  "expires_in": int(self.tokens[self.current] - now)})

    def _check_token(self, token: str) -> int:
        if token not in self.tokens:
            return 40001
        return 42001 if self.tokens[token] <= time.time() else 0

    def _quota(self, kind: str) -> int:
        minute = int(time.time() // 60)
        if self.quota_per_day and self._day[kind] >= self.quota_per_day:
            return 45009
        if self.quota_per_minute and self._minute[(kind, minute)] >= self.quota_per_minute:
            return 45011
        self._day[kind] += 1
        self._minute[(kind, minute)] += 1
        return 0

    async def _api(self, request: web.Request) -> web.Response:
        kind = KINDS[request.path]
        code = self._check_token(request.query.get("access_token", ""))
        if code:
            self.refused.append((kind, code))
            return self._error(code)
        if request.method == "GET":
            body, openid = dict(request.query), request.query.get("openid", "")
        else:
            body = json.loads(await request.read())
            openid = body.get("touser", "")
        client_id = str(body.get("client_msg_id", "")) if isinstance(body, dict) else ""
        if (kind, openid) in self.fail_for:
            code = self.fail_for[(kind, openid)]
            self.refused.append((kind, code))
            return self._error(code)
        if client_id and client_id in self.seen_ids:
            self.duplicates.append(client_id)
            return web.json_response({"errcode": 0, "errmsg": "ok"})
        if client_id:
            self.seen_ids.add(client_id)
        if self.latency:
            await asyncio.sleep(self.latency)
        if self.fail.get(kind):
            code = self.fail[kind].pop(0)
            self.refused.append((kind, code))
            self.seen_ids.discard(client_id)
            return self._error(code)
        if kind == "custom" and openid in self.closed_window:
            self.seen_ids.discard(client_id)
            self.refused.append((kind, 45015))
            return self._error(45015, "response out of time limit or subscription is canceled")
        if kind in ("custom", "template", "subscribe"):
            code = self._quota(kind)
            if code:
                self.seen_ids.discard(client_id)
                self.refused.append((kind, code))
                return self._error(code, "api freq out of limit")
        got = Received(kind, openid, body, time.time(), client_id)
        self.received.append(got)
        if self.on_receive:
            self.on_receive(got)
        if kind == "user_info":
            return web.json_response({"subscribe": 1, "openid": openid, "language": "zh_CN",
                                      "subscribe_time": int(time.time())})
        if kind == "template":
            return web.json_response({"errcode": 0, "errmsg": "ok", "msgid": len(self.received)})
        return web.json_response({"errcode": 0, "errmsg": "ok"})

    async def _received(self, request: web.Request) -> web.Response:
        return web.json_response({
            "token_requests": self.token_requests,
            "refused": self.refused,
            "duplicates": self.duplicates,
            "received": [{"kind": r.kind, "openid": r.openid, "text": r.text,
                          "client_id": r.client_id} for r in self.received]})

    async def _delivered(self, request: web.Request) -> web.Response:
        wanted = request.query.get("id", "")
        return web.json_response({"delivered": wanted in self.seen_ids})

    async def _config(self, request: web.Request) -> web.Response:
        cfg = await request.json()
        if "latency" in cfg:
            self.latency = float(cfg["latency"])
        for kind, codes in (cfg.get("fail") or {}).items():
            self.fail[kind].extend(int(c) for c in codes)
        for name in ("quota_per_minute", "quota_per_day"):
            if name in cfg:
                setattr(self, name, int(cfg[name]))
        if cfg.get("closed_window"):
            self.closed_window.update(cfg["closed_window"])
        if cfg.get("expire_tokens"):
            self.expire_tokens()
        return web.json_response({"ok": True})

    async def _reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"ok": True})

    # ------------------------------------------------------------------ running

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        self.url = f"http://{host}:{port}"
        return self.url

    async def stop(self) -> None:
        await self._runner.cleanup()


def serve(host: str = "127.0.0.1", port: int = 9100, appid: str | None = None) -> None:
    """`python main.py fake-wechat`: print every push as it arrives."""
    def show(got: Received) -> None:
        stamp = time.strftime("%H:%M:%S", time.localtime(got.at))
        print(f"[{stamp}] {got.kind:9} → {got.openid}: {got.text}", flush=True)

    fake = FakeWeChat(appid=appid, on_receive=show)

    async def main() -> None:
        url = await fake.start(host, port)
        print(f"假微信接口已启动:{url}(WECHAT_API_BASE={url})", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await fake.stop()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass

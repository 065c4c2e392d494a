"""The async WeChat HTTP API client (aiohttp).

One access token for every process: fetched from `stable_token` (which returns the same
token when asked again, so processes never invalidate each other), cached in the store
(Redis when configured) and refreshed under the store's lock, so N cold processes make one
request. A token error (40001/40014/42001) refreshes once and retries once; never recursively.

Sends are not idempotent on WeChat's side. A send that times out or whose connection drops
after the request left raises `OutcomeUnknown` and is never retried here: the outbox decides
(bot/dispatcher.py). Only failures where the request provably never reached WeChat
(connection refused, DNS) or was refused with an error code are safe to repeat.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
import aiohttp

from bot.config import Settings
from bot.store import LockTimeout, Store

log = logging.getLogger(__name__)

TOKEN_KEY = "wx:token"
TOKEN_MARGIN = 300  # refresh this many seconds before WeChat's expiry


# ---------------------------------------------------------------------------- errors

class WeChatError(Exception):
    """WeChat answered with an error code: the request was refused, nothing was delivered."""

    code = 0

    def __init__(self, code: int, message: str = "") -> None:
        super().__init__(f"{code} {message}".strip())
        self.code = code
        self.message = message


class TokenInvalid(WeChatError):
    """40001 invalid credential, 40014 invalid token, 42001 token expired."""


class QuotaExceeded(WeChatError):
    """45009 daily quota, 45011 per-minute quota: pause this kind of sending."""

    @property
    def daily(self) -> bool:
        return self.code == 45009


class WindowClosed(WeChatError):
    """45015 customer-service window expired, 45047 window quota used up."""


class Refused(WeChatError):
    """43101 the resident refused the subscription notice."""


class NotFollowing(WeChatError):
    """43004 the resident no longer follows the account."""


class NoPermission(WeChatError):
    """48001 the account may not use this API (template/subscription need verification)."""


class IPNotWhitelisted(WeChatError):
    """40164 the server's IP is not on the account's whitelist: an operator must fix it."""


class FieldTooLong(WeChatError):
    """47003 a template/subscription field is invalid (thing <= 20 chars, phrase <= 5)."""


class Busy(WeChatError):
    """-1 system busy, or an HTTP 5xx: refused for now, safe to try again later."""


class Unreachable(Exception):
    """The request never reached WeChat (connection refused, DNS): safe to try again."""


class TokenUnavailable(Unreachable):
    """No access token could be had: the send itself never left, safe to try again."""


class OutcomeUnknown(Exception):
    """The request may have been delivered (timeout, connection dropped after sending)."""


ERRORS: dict[int, type[WeChatError]] = {
    40001: TokenInvalid, 40014: TokenInvalid, 42001: TokenInvalid,
    45009: QuotaExceeded, 45011: QuotaExceeded,
    45015: WindowClosed, 45047: WindowClosed,
    43101: Refused, 43004: NotFollowing, 48001: NoPermission, 40164: IPNotWhitelisted,
    47003: FieldTooLong, -1: Busy,
}


def error_for(code: int, message: str = "") -> WeChatError:
    return ERRORS.get(code, WeChatError)(code, message)


# ---------------------------------------------------------------------------- the client

class WeChatAPI:
    def __init__(self, settings: Settings, store: Store,
                 session: aiohttp.ClientSession | None = None) -> None:
        self.settings = settings
        self.store = store
        self.base = settings.wechat_api_base.rstrip("/")
        self._session = session
        self._own_session = session is None
        self._token: tuple[str, float] | None = None  # this process's copy: (token, expiry)

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.settings.wechat_timeout_seconds),
                connector=aiohttp.TCPConnector(limit=max(16, self.settings.push_concurrency * 2)))
            self._own_session = True
        return self._session

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()

    # ------------------------------------------------------------------ access token

    async def token(self) -> str:
        if self._token and self._token[1] > time.time():
            return self._token[0]
        cached = await self._cached()
        if cached:
            return cached
        wait = self.settings.wechat_timeout_seconds + 5
        async with self.store.lock("wx:token", timeout=wait, wait=wait):
            cached = await self._cached()  # another process may have refreshed meanwhile
            if cached:
                return cached
            return await self._fetch(force=False)

    async def _cached(self) -> str | None:
        raw = await self.store.get(TOKEN_KEY)
        if not raw:
            return None
        token, expires = json.loads(raw)
        if expires - TOKEN_MARGIN <= time.time():
            return None
        self._token = (token, expires - TOKEN_MARGIN)
        return token

    async def _fetch(self, force: bool) -> str:
        body = {"grant_type": "client_credential", "appid": self.settings.wechat_appid,
                "secret": self.settings.wechat_appsecret, "force_refresh": force}
        data = await self._post_raw("/cgi-bin/stable_token", body)
        token, expires_in = data["access_token"], int(data.get("expires_in", 7200))
        expires = time.time() + expires_in
        await self.store.set(TOKEN_KEY, json.dumps([token, expires]),
                             max(1, expires_in - TOKEN_MARGIN))
        self._token = (token, expires - TOKEN_MARGIN)
        log.info("access token refreshed (force=%s, valid %d s)", force, expires_in)
        return token

    async def refresh_after(self, bad: str) -> str:
        """The token `bad` was rejected: get a new one, once for all processes."""
        self._token = None
        wait = self.settings.wechat_timeout_seconds + 5
        async with self.store.lock("wx:token", timeout=wait, wait=wait):
            cached = await self._cached()
            if cached and cached != bad:  # someone already refreshed it
                return cached
            token = await self._fetch(force=False)
            if token == bad:  # WeChat still hands out the rejected one: ask for a new one
                token = await self._fetch(force=True)
            return token

    # ------------------------------------------------------------------ transport

    async def _post_raw(self, path: str, body: dict, params: dict | None = None) -> dict:
        return await self._request("POST", path, body, params)

    async def _request(self, method: str, path: str, body: dict | None,
                       params: dict | None) -> dict:
        url = self.base + path
        payload = None if body is None else json.dumps(body, ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json; charset=utf-8"} if payload else None
        try:
            async with self.session.request(method, url, data=payload, params=params,
                                            headers=headers) as resp:
                if resp.status >= 500:
                    raise Busy(-1, f"HTTP {resp.status}")
                data = json.loads(await resp.read() or b"{}")
        except (aiohttp.ClientConnectorError, aiohttp.InvalidURL) as exc:
            raise Unreachable(f"{type(exc).__name__}: {exc}") from exc
        except (asyncio.TimeoutError, aiohttp.ClientError, ValueError) as exc:
            # Sent (or partly sent) and no clear answer: WeChat may have acted on it.
            raise OutcomeUnknown(f"{type(exc).__name__}: {exc}") from exc
        code = int(data.get("errcode", 0) or 0)
        if code:
            raise error_for(code, str(data.get("errmsg", "")))
        return data

    async def call(self, path: str, body: dict | None = None, *, method: str = "POST",
                   params: dict | None = None) -> dict:
        """An API call with the access token; a rejected token is refreshed and retried once."""
        token = await self._token_or_raise(self.token())
        try:
            return await self._request(method, path, body, {**(params or {}), "access_token": token})
        except TokenInvalid:
            token = await self._token_or_raise(self.refresh_after(token))
            # The first request was refused on its token, so it did nothing: one retry is safe.
            return await self._request(method, path, body,
                                       {**(params or {}), "access_token": token})

    @staticmethod
    async def _token_or_raise(getting) -> str:
        # Whatever goes wrong while getting a token, the send has not left yet.
        try:
            return await getting
        except (Unreachable, OutcomeUnknown, WeChatError, LockTimeout, KeyError) as exc:
            raise TokenUnavailable(describe(exc)) from exc

    # ------------------------------------------------------------------ the calls

    def _tag(self, body: dict, client_id: str | None) -> dict:
        # Only for an API that can answer "did you get it?" (the fake server): lets the
        # outbox resend a send whose outcome is unknown without risking a duplicate.
        if client_id and self.settings.wechat_delivery_check:
            body["client_msg_id"] = client_id
        return body

    async def send_text(self, openid: str, text: str, *, client_id: str | None = None) -> dict:
        return await self.call("/cgi-bin/message/custom/send", self._tag(
            {"touser": openid, "msgtype": "text", "text": {"content": text}}, client_id))

    async def send_news(self, openid: str, title: str, description: str, url: str,
                        picurl: str = "", *, client_id: str | None = None) -> dict:
        article = {"title": title, "description": description, "url": url, "picurl": picurl}
        return await self.call("/cgi-bin/message/custom/send", self._tag(
            {"touser": openid, "msgtype": "news", "news": {"articles": [article]}}, client_id))

    async def send_image(self, openid: str, media_id: str, *, client_id: str | None = None) -> dict:
        return await self.call("/cgi-bin/message/custom/send", self._tag(
            {"touser": openid, "msgtype": "image", "image": {"media_id": media_id}}, client_id))

    async def send_template(self, openid: str, template_id: str, data: dict, *, url: str = "",
                            client_id: str | None = None) -> dict:
        body = {"touser": openid, "template_id": template_id, "data": data}
        if url:
            body["url"] = url
        return await self.call("/cgi-bin/message/template/send", self._tag(body, client_id))

    async def send_subscribe(self, openid: str, template_id: str, data: dict, *, page: str = "",
                             client_id: str | None = None) -> dict:
        body = {"touser": openid, "template_id": template_id, "data": data}
        if page:
            body["page"] = page
        return await self.call("/cgi-bin/message/subscribe/bizsend", self._tag(body, client_id))

    async def user_info(self, openid: str) -> dict:
        return await self.call("/cgi-bin/user/info", method="GET",
                               params={"openid": openid, "lang": "zh_CN"})

    async def create_menu(self, menu: dict) -> dict:
        return await self.call("/cgi-bin/menu/create", menu)

    async def delivered(self, client_id: str) -> bool | None:
        """Whether the server received the send tagged `client_id`; None if it cannot say."""
        if not self.settings.wechat_delivery_check:
            return None
        try:
            data = await self._request("GET", "/fake/delivered", None, {"id": client_id})
        except (WeChatError, Unreachable, OutcomeUnknown):
            return None
        return bool(data.get("delivered"))


def subscription_fields(text: str, field: str = "thing1") -> dict:
    """A subscription notice's `thing` field holds at most 20 characters (else 47003)."""
    short = text.replace("\n", " ").strip()
    return {field: {"value": short if len(short) <= 20 else short[:19] + "…"}}


def template_fields(text: str) -> dict:
    first, _, rest = text.partition("\n")
    return {"first": {"value": first}, "keyword1": {"value": rest or first},
            "remark": {"value": "回复公众号消息可查看详情"}}


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:255]


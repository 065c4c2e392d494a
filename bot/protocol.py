"""WeChat's inbound protocol: signatures, the replay window, decryption, parsing, rendering.

wechatpy does the cryptography and reply rendering; this module parses (ElementTree), decides
what to trust and turns a parsed message into the engine's `Incoming`.
"""
from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from datetime import datetime, timezone

from wechatpy.crypto import WeChatCrypto
from wechatpy.exceptions import InvalidSignatureException
from wechatpy.replies import TextReply
from wechatpy.utils import check_signature

from handlers.engine import Incoming


class Refused(Exception):
    """The request is not from WeChat (or too old): answered 403, never handled."""


def verify(token: str, query, window: int, now: float | None = None) -> None:
    signature, timestamp, nonce = (query.get(k, "") for k in ("signature", "timestamp", "nonce"))
    try:
        check_signature(token, signature, timestamp, nonce)
    except InvalidSignatureException as exc:
        raise Refused("bad signature") from exc
    try:
        age = abs((now or time.time()) - int(timestamp))
    except ValueError as exc:
        raise Refused("bad timestamp") from exc
    if age > window:
        raise Refused(f"timestamp outside the replay window ({age:.0f}s)")


class Codec:
    """Decrypts a POST body and encrypts the reply, according to the request's mode."""

    def __init__(self, token: str, aes_key: str | None, appid: str) -> None:
        self.crypto = WeChatCrypto(token, aes_key, appid) if aes_key else None

    def decode(self, body: bytes, query) -> tuple[str, bool]:
        """Returns (plain XML, encrypted?). Raises Refused for a bad msg_signature."""
        if query.get("encrypt_type", "raw") != "aes":
            return body.decode("utf-8"), False
        if self.crypto is None:
            raise Refused("encrypted message but WECHAT_AES_KEY is not configured")
        encrypted = _tree(body.decode("utf-8")).findtext("Encrypt")  # WeChat sends UTF-8
        if not encrypted:
            raise ValueError("no Encrypt element")
        try:
            xml = self.crypto.decrypt_message({"Encrypt": encrypted}, query.get("msg_signature", ""),
                                              query.get("timestamp", ""), query.get("nonce", ""))
        except InvalidSignatureException as exc:
            raise Refused("bad msg_signature") from exc
        return xml, True

    def encode(self, xml: str, encrypted: bool, nonce: str) -> str:
        if not encrypted:
            return xml
        return self.crypto.encrypt_message(xml, nonce, int(time.time()))


class Message:
    """A message as WeChat sent it: its top-level XML fields by name, as text."""

    __slots__ = ("data",)

    def __init__(self, data: dict[str, str]) -> None:
        self.data = data

    @property
    def source(self) -> str:
        return self.data.get("FromUserName", "")

    @property
    def target(self) -> str:
        return self.data.get("ToUserName", "")


def _tree(xml: str) -> ET.Element:
    """WeChat never sends a DTD: one is refused outright, so no entity is ever declared or
    expanded (and ElementTree fetches no external ones). Text, not bytes: bytes in another
    encoding (UTF-16) would hide a DTD from the check. ElementTree rather than wechatpy's
    xmltodict-based parser: a third of the cost, paid twice a message (envelope and message)."""
    if "<!DOCTYPE" in xml or "\x00" in xml:  # NULs: UTF-16 without a BOM passes as UTF-8
        raise ValueError("DTD or NUL refused")
    return ET.fromstring(xml)


def parse(xml: str) -> Message:
    """Raises on junk (several kinds of error); callers treat any as junk."""
    data = {child.tag: child.text or "" for child in _tree(xml)}
    if not data.get("FromUserName"):
        raise ValueError("empty message")
    return Message(data)


def dedupe_key(msg: Message) -> str:
    raw = msg.data
    if raw.get("MsgType", "").lower() == "event":
        parts = [raw.get("FromUserName", ""), raw.get("CreateTime", ""), raw.get("Event", "")]
        if raw.get("EventKey"):
            parts.append(str(raw["EventKey"]))
        return ":".join(parts)
    return f"{raw.get('FromUserName', '')}:{raw.get('MsgId', '')}"


_EVENT_ALIASES = {"subscribe_scan": "subscribe", "subscribe_scan_product": "subscribe"}


def to_incoming(msg: Message, now: datetime | None = None) -> Incoming:
    raw = msg.data
    kind = raw.get("MsgType", "unknown").lower()
    inc = Incoming(openid=raw.get("FromUserName", ""), kind=kind,
                   now=now or datetime.now(timezone.utc), msg_id=str(raw.get("MsgId", "")))
    if kind == "text":
        inc.text = raw.get("Content") or ""
    elif kind == "voice":
        # With speech recognition on, the recognised text is treated as typed text.
        inc.text = raw.get("Recognition") or ""
        inc.media_id = raw.get("MediaId") or ""
        if inc.text:
            inc.kind = "text"
    elif kind == "image":
        inc.pic_url, inc.media_id = raw.get("PicUrl") or "", raw.get("MediaId") or ""
    elif kind == "location":
        inc.location = {"x": raw.get("Location_X"), "y": raw.get("Location_Y"),
                        "label": raw.get("Label") or ""}
    elif kind == "event":
        event = (raw.get("Event") or "").lower()
        inc.event = _EVENT_ALIASES.get(event, event)
        inc.event_key = str(raw.get("EventKey") or "")
    return inc


def render_text(msg: Message, text: str) -> str:
    return TextReply(source=msg.target, target=msg.source, content=text).render()


def _pieces(line: str, max_bytes: int):
    """A line longer than the limit is cut by characters (UTF-8 bytes counted)."""
    piece, size = [], 0
    for ch in line:
        width = len(ch.encode())
        if size + width > max_bytes:
            yield "".join(piece)
            piece, size = [], 0
        piece.append(ch)
        size += width
    yield "".join(piece)


def split_reply(text: str, max_bytes: int) -> list[str]:
    """Cut a long reply at line breaks into parts WeChat will show (about 2,000 bytes each)."""
    if len(text.encode()) <= max_bytes:  # nearly every reply
        return [text]
    parts, current = [], None
    for line in text.split("\n"):
        for piece in _pieces(line, max_bytes):
            candidate = piece if current is None else f"{current}\n{piece}"
            if current is not None and len(candidate.encode()) > max_bytes:
                parts.append(current)
                candidate = piece
            current = candidate
    parts.append(current or "")
    return parts

"""A WeChat message builder and poster for tests: signs (and encrypts) like Tencent does."""
from __future__ import annotations

import itertools
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from wechatpy.crypto import WeChatCrypto

from bot.chat import sign

_ids = itertools.count(int(time.time() * 1000))


def xml_of(openid: str, msg_type: str, create_time: int | None = None, **fields) -> str:
    body = {"ToUserName": "gh_yunfanglin", "FromUserName": openid,
            "CreateTime": create_time or int(time.time()), "MsgType": msg_type, **fields}
    inner = "".join(
        f"<{k}>{v}</{k}>" if isinstance(v, int) else f"<{k}><![CDATA[{v}]]></{k}>"
        for k, v in body.items())
    return f"<xml>{inner}</xml>"


def text_xml(openid: str, content: str, msg_id: int | None = None) -> str:
    return xml_of(openid, "text", Content=content, MsgId=msg_id or next(_ids))


def event_xml(openid: str, event: str, key: str = "", create_time: int | None = None) -> str:
    fields = {"Event": event}
    if key:
        fields["EventKey"] = key
    return xml_of(openid, "event", create_time=create_time, **fields)


@dataclass
class Response:
    status: int
    body: str
    content: str | None  # the reply text, None for `success` or an error


@dataclass
class WeChat:
    """Posts to the app under test as WeChat would."""

    client: object
    token: str
    aes_key: str | None = None
    appid: str = "wx0000000000000000"
    mode: str = "plain"  # plain, compat, safe
    sent: list = field(default_factory=list)

    def query(self, timestamp: int | None = None, nonce: str = "1320562132") -> dict:
        ts = str(timestamp or int(time.time()))
        return {"signature": sign(self.token, ts, nonce), "timestamp": ts, "nonce": nonce,
                "openid": "x"}

    async def post_xml(self, xml: str, query: dict | None = None) -> Response:
        query = dict(query or self.query())
        body = xml
        crypto = WeChatCrypto(self.token, self.aes_key, self.appid) if self.aes_key else None
        if self.mode != "plain":
            encrypted = crypto.encrypt_message(xml, query["nonce"], query["timestamp"])
            enc_root = ET.fromstring(encrypted)
            query.update(encrypt_type="aes", msg_signature=enc_root.findtext("MsgSignature"))
            if self.mode == "safe":
                body = (f"<xml><ToUserName><![CDATA[gh_yunfanglin]]></ToUserName>"
                        f"<Encrypt><![CDATA[{enc_root.findtext('Encrypt')}]]></Encrypt></xml>")
            else:  # compatibility: the plain fields and <Encrypt> side by side
                body = xml.replace("</xml>",
                                   f"<Encrypt><![CDATA[{enc_root.findtext('Encrypt')}]]></Encrypt></xml>")
        resp = await self.client.post("/wechat", params=query, data=body.encode())
        text = await resp.text()
        return Response(resp.status, text, self._content(text, crypto) if resp.status == 200 else None)

    def _content(self, text: str, crypto) -> str | None:
        if text == "success":
            return None
        root = ET.fromstring(text)
        if root.find("Encrypt") is not None:
            text = crypto.decrypt_message(text, root.findtext("MsgSignature"),
                                          root.findtext("TimeStamp"), root.findtext("Nonce"))
            root = ET.fromstring(text)
        return root.findtext("Content")

    async def say(self, openid: str, content: str) -> str | None:
        return (await self.post_xml(text_xml(openid, content))).content

    async def event(self, openid: str, event: str, key: str = "") -> str | None:
        return (await self.post_xml(event_xml(openid, event, key))).content

"""A terminal client: talk to the running bot through the real webhook, signed like WeChat."""
from __future__ import annotations

import asyncio
import hashlib
import random
import string
import sys
import time
import xml.etree.ElementTree as ET

import aiohttp
from wechatpy.crypto import WeChatCrypto

from bot.config import Settings


def sign(*parts: str) -> str:
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()


def message_xml(openid: str, content: str, msg_id: int, to: str = "gh_yunfanglin") -> str:
    return (f"<xml><ToUserName><![CDATA[{to}]]></ToUserName>"
            f"<FromUserName><![CDATA[{openid}]]></FromUserName>"
            f"<CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
            f"<Content><![CDATA[{content}]]></Content><MsgId>{msg_id}</MsgId></xml>")


def signed_query(token: str) -> dict:
    timestamp, nonce = str(int(time.time())), "".join(random.choices(string.digits, k=10))
    return {"signature": sign(token, timestamp, nonce), "timestamp": timestamp, "nonce": nonce}


async def post(session: aiohttp.ClientSession, url: str, settings: Settings, openid: str,
               xml: str) -> str:
    query = signed_query(settings.wechat_token) | {"openid": openid}
    body = xml
    crypto = None
    if settings.wechat_aes_key:
        crypto = WeChatCrypto(settings.wechat_token, settings.wechat_aes_key, settings.wechat_appid)
        encrypted = crypto.encrypt_message(xml, query["nonce"], query["timestamp"])
        query["msg_signature"] = ET.fromstring(encrypted).findtext("MsgSignature")
        query["encrypt_type"] = "aes"
        body = encrypted
    async with session.post(url, params=query, data=body.encode()) as resp:
        text = await resp.text()
    if text == "success" or resp.status != 200:
        return "" if text == "success" else f"[HTTP {resp.status}] {text}"
    if crypto is not None:
        root = ET.fromstring(text)
        text = crypto.decrypt_message(text, root.findtext("MsgSignature"),
                                      root.findtext("TimeStamp"), root.findtext("Nonce"))
    return ET.fromstring(text).findtext("Content") or ""


async def chat(settings: Settings, openid: str, url: str) -> None:
    print(f"和云芳邻聊天(身份 {openid});输入 /quit 结束。")
    msg_id = int(time.time() * 1000)
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as session:
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line or line.strip() == "/quit":
                return
            if not line.strip():
                continue
            msg_id += 1
            try:
                reply = await post(session, url, settings, openid,
                                   message_xml(openid, line.strip(), msg_id))
            except aiohttp.ClientError as exc:
                print(f"[连接不上 {url}: {exc};先在另一个终端运行 make run]")
                continue
            print(reply or "[没有即时回复;回复会通过客服消息推送]", flush=True)

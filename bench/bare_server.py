"""The baseline for bench/webhook_bench.py: wechatpy alone, no bot.

Verifies the signature, decrypts, parses, renders a text reply and encrypts it; /healthz
answers so the benchmark knows it is up. Port and keys come from the environment.
"""
from __future__ import annotations

import os

from aiohttp import web
from wechatpy import parse_message
from wechatpy.crypto import WeChatCrypto
from wechatpy.replies import TextReply
from wechatpy.utils import check_signature

TOKEN = os.environ["WECHAT_TOKEN"]
crypto = WeChatCrypto(TOKEN, os.environ["WECHAT_AES_KEY"], os.environ["WECHAT_APPID"])


async def wechat(request: web.Request) -> web.Response:
    q = request.query
    check_signature(TOKEN, q["signature"], q["timestamp"], q["nonce"])
    xml = crypto.decrypt_message(await request.read(), q["msg_signature"], q["timestamp"], q["nonce"])
    msg = parse_message(xml)
    reply = TextReply(source=msg.target, target=msg.source, content="您好").render()
    return web.Response(text=crypto.encrypt_message(reply, q["nonce"]), content_type="application/xml")


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


app = web.Application()
app.router.add_post("/wechat", wechat)
app.router.add_get("/healthz", healthz)

if __name__ == "__main__":
    web.run_app(app, host="127.0.0.1", port=int(os.environ["PORT"]), print=None, access_log=None)

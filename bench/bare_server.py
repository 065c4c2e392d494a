"""The baseline for bench/webhook_bench.py: wechatpy alone, no bot.

Verifies the signature, decrypts, parses, renders a text reply and encrypts it; /healthz
answers so the benchmark knows it is up. Port and keys come from the environment. It runs
the way `main.py serve` runs the bot (uvloop; `--workers N` processes sharing the port with
SO_REUSEPORT), so that the comparison measures the bot and nothing else.

    python bench/bare_server.py [--workers N]
"""
from __future__ import annotations

import argparse
import multiprocessing
import os

import uvloop
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


def serve(reuse_port: bool) -> None:
    app = web.Application()
    app.router.add_post("/wechat", wechat)
    app.router.add_get("/healthz", healthz)
    web.run_app(app, host="127.0.0.1", port=int(os.environ["PORT"]), reuse_port=reuse_port or None,
                print=None, access_log=None, loop=uvloop.new_event_loop())


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=1)
    workers = parser.parse_args().workers
    if workers <= 1:
        serve(False)
    else:
        procs = [multiprocessing.Process(target=serve, args=(True,)) for _ in range(workers)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()

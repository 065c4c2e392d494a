"""The WeChat webhook protocol, over real HTTP, on SQLite + memory and PostgreSQL + Redis."""
from __future__ import annotations

import asyncio
import time
import xml.etree.ElementTree as ET

import pytest
from wechatpy.crypto import WeChatCrypto

from bot import keys
from bot.chat import sign
from bot.protocol import Refused, split_reply, verify
from models.outbox import Outbox
from models.residents import Resident
from tests import vectors as v
from tests.conftest import make_settings
from tests.wx import WeChat, event_xml, text_xml, xml_of


def test_get_signature_vector():
    verify(v.GET_TOKEN, {"signature": v.GET_SIGNATURE, "timestamp": v.GET_TIMESTAMP,
                         "nonce": v.GET_NONCE}, window=300, now=int(v.GET_TIMESTAMP))
    with pytest.raises(Refused):
        verify(v.GET_TOKEN, {"signature": "0" * 40, "timestamp": v.GET_TIMESTAMP,
                             "nonce": v.GET_NONCE}, window=300, now=int(v.GET_TIMESTAMP))
    with pytest.raises(Refused):  # right signature, but far outside the replay window
        verify(v.GET_TOKEN, {"signature": v.GET_SIGNATURE, "timestamp": v.GET_TIMESTAMP,
                             "nonce": v.GET_NONCE}, window=300, now=int(v.GET_TIMESTAMP) + 301)


async def test_get_verification_echoes(client, wx):
    query = wx.query() | {"echostr": "shr5ch"}
    resp = await client.get("/wechat", params=query)
    assert resp.status == 200 and await resp.text() == "shr5ch"
    query["signature"] = "f" * 40
    resp = await client.get("/wechat", params=query)
    assert resp.status == 403


async def test_plaintext_reply_swaps_users(wx):
    resp = await wx.post_xml(text_xml("o-plain", "你好"))
    root = ET.fromstring(resp.body)
    assert root.findtext("ToUserName") == "o-plain"
    assert root.findtext("FromUserName") == "gh_yunfanglin"
    assert root.findtext("MsgType") == "text"
    assert "您好" in resp.content


@pytest.mark.parametrize("body", [v.SAFE_BODY, v.COMPAT_BODY], ids=["safe", "compat"])
async def test_official_vector_is_decrypted_and_reply_encrypted(app_client, backend, tmp_path,
                                                                 request, body):
    # The vector's timestamp is from 2014: only this test opens the replay window that wide.
    settings = make_settings(backend, tmp_path, request, replay_window_seconds=10 ** 10)
    client = await app_client(settings)
    query = {"signature": sign(v.TOKEN, v.TIMESTAMP, v.NONCE), "timestamp": v.TIMESTAMP,
             "nonce": v.NONCE, "openid": "oyORnuP8q7ou2gfYjqLzSIWZf0rs", "encrypt_type": "aes",
             "msg_signature": v.MSG_SIGNATURE}
    resp = await client.post("/wechat", params=query, data=body.encode())
    assert resp.status == 200
    envelope = ET.fromstring(await resp.text())
    assert {e.tag for e in envelope} == {"Encrypt", "MsgSignature", "TimeStamp", "Nonce"}
    crypto = WeChatCrypto(v.TOKEN, v.AES_KEY, v.APPID)
    plain = crypto.decrypt_message(await resp.text(), envelope.findtext("MsgSignature"),
                                   envelope.findtext("TimeStamp"), envelope.findtext("Nonce"))
    reply = ET.fromstring(plain)
    assert reply.findtext("ToUserName") == "oyORnuP8q7ou2gfYjqLzSIWZf0rs"
    assert reply.findtext("Content")  # the bot answered "abcdteT" with its menu
    assert await Resident.filter(openid="oyORnuP8q7ou2gfYjqLzSIWZf0rs").exists()


@pytest.mark.parametrize("mode", ["safe", "compat"])
async def test_encrypted_modes_round_trip(wx, mode):
    wx.mode = mode
    reply = await wx.say("o-enc", "你好")
    assert reply and "您好" in reply


async def test_forged_signature_is_refused_and_never_handled(client, wx):
    query = wx.query()
    query["signature"] = "0" * 40
    resp = await client.post("/wechat", params=query, data=text_xml("o-forged", "你好").encode())
    assert resp.status == 403
    assert not await Resident.filter(openid="o-forged").exists()


async def test_bad_msg_signature_is_refused(client, wx):
    wx.mode = "safe"
    query = wx.query()
    crypto = WeChatCrypto(wx.token, wx.aes_key, wx.appid)
    encrypted = crypto.encrypt_message(text_xml("o-badmsg", "你好"), query["nonce"],
                                       query["timestamp"])
    query.update(encrypt_type="aes", msg_signature="1" * 40)
    resp = await client.post("/wechat", params=query, data=encrypted.encode())
    assert resp.status == 403
    assert not await Resident.filter(openid="o-badmsg").exists()


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16", "utf-16-le", "utf-16-be"])
async def test_encrypted_envelope_with_a_dtd_is_never_expanded(client, wx, encoding):
    """A DTD in the envelope, also one hidden in a UTF-16 body, is refused before parsing:
    answered `success` as junk (had it been expanded, the bad msg_signature would be a 403)."""
    wx.mode = "safe"
    query = wx.query()
    query.update(encrypt_type="aes", msg_signature="1" * 40)
    body = ('<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e "abc">]>'
            "<xml><ToUserName>a</ToUserName><Encrypt>&e;</Encrypt></xml>")
    resp = await client.post("/wechat", params=query, data=body.encode(encoding))
    assert resp.status == 200 and await resp.text() == "success"


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
async def test_plaintext_body_in_utf16_without_bom_is_junk(client, wx, encoding):
    """Valid UTF-8 bytes (a NUL between characters) that expat would read as UTF-16 and
    expand: refused before parsing, the billion laughs included."""
    resp = await client.post("/wechat", params=wx.query(), data=BILLION_LAUGHS.encode(encoding))
    assert resp.status == 200 and await resp.text() == "success"
    assert await Resident.all().count() == 0


async def test_replay_window(client, wx):
    old = wx.query(timestamp=int(time.time()) - 3600)
    resp = await client.post("/wechat", params=old, data=text_xml("o-old", "你好").encode())
    assert resp.status == 403
    assert not await Resident.filter(openid="o-old").exists()


async def test_oversized_body_is_413(client, wx):
    big = text_xml("o-big", "长" * 30_000)  # about 90 KB of UTF-8
    resp = await client.post("/wechat", params=wx.query(), data=big.encode())
    assert resp.status == 413
    assert not await Resident.filter(openid="o-big").exists()


BILLION_LAUGHS = ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
                  '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
                  '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>'
                  '<xml><ToUserName>a</ToUserName><FromUserName>o-lol</FromUserName>'
                  '<CreateTime>1</CreateTime><MsgType>text</MsgType><Content>&lol3;</Content>'
                  '<MsgId>1</MsgId></xml>')
XXE = ('<?xml version="1.0"?><!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
       '<xml><ToUserName>a</ToUserName><FromUserName>o-xxe</FromUserName><CreateTime>1</CreateTime>'
       '<MsgType>text</MsgType><Content>&xxe;</Content><MsgId>2</MsgId></xml>')


@pytest.mark.parametrize("body", ["", "not xml", "<xml><ToUserName>a</ToUserName>", "<xml></xml>",
                                  "<xml><MsgType>text</MsgType></xml>", BILLION_LAUGHS, XXE],
                         ids=["empty", "junk", "truncated", "empty-xml", "no-sender",
                              "billion-laughs", "xxe"])
async def test_malformed_bodies_answer_success(client, wx, body):
    resp = await client.post("/wechat", params=wx.query(), data=body.encode())
    assert resp.status == 200 and await resp.text() == "success"
    assert await Resident.all().count() == 0


def _count_calls(app, delay: float = 0.0, method: str = "_turn"):
    """Wrap the conversation's turn (the work done under the resident's lock, after the
    dedupe claim) so the test sees how often and when the handler really ran."""
    conversation = app[keys.CONVERSATION]
    original = getattr(conversation, method)
    calls: list[tuple[str, float, float]] = []

    async def handle(incoming, *args, **kwargs):
        start = time.monotonic()
        await asyncio.sleep(delay)
        reply = await original(incoming, *args, **kwargs)
        calls.append((incoming.text, start, time.monotonic()))
        return reply

    setattr(conversation, method, handle)
    return calls


async def test_retry_after_finish_gets_same_reply_and_handler_runs_once(client, wx):
    calls = _count_calls(client.app)
    xml = text_xml("o-retry", "你好", msg_id=424242)
    first = await wx.post_xml(xml)
    second = await wx.post_xml(xml)
    assert first.content and first.content == second.content
    assert len(calls) == 1


async def test_concurrent_retries_wait_for_first_delivery(client, wx):
    calls = _count_calls(client.app, delay=0.5)
    xml = text_xml("o-burst-retry", "你好", msg_id=777)
    replies = await asyncio.gather(*(wx.post_xml(xml) for _ in range(3)))
    assert len(calls) == 1
    assert {r.content for r in replies} == {replies[0].content} and replies[0].content


async def test_event_dedupe_by_create_time_and_key(client, wx):
    calls = _count_calls(client.app)
    xml = event_xml("o-evt", "CLICK", "HELP", create_time=int(time.time()))
    a, b = await wx.post_xml(xml), await wx.post_xml(xml)
    assert a.content == b.content and len(calls) == 1
    await wx.post_xml(event_xml("o-evt", "CLICK", "POINTS", create_time=int(time.time())))
    assert len(calls) == 2


async def test_one_openid_is_handled_in_order_one_at_a_time(client, wx):
    calls = _count_calls(client.app, delay=0.05)
    texts = [f"你好{i}" for i in range(6)]
    tasks = []
    for t in texts:  # a burst, sent in this order
        tasks.append(asyncio.create_task(wx.say("o-order", t)))
        await asyncio.sleep(0.005)
    await asyncio.gather(*tasks)
    assert [c[0] for c in calls] == texts
    for (_, _, end), (_, start, _) in zip(calls, calls[1:]):
        assert start >= end  # the next turn starts only after the previous one ended


async def test_past_budget_answers_success_and_queues_reply(app_client, backend, tmp_path, request):
    settings = make_settings(backend, tmp_path, request, reply_budget_seconds=0.2)
    client = await app_client(settings)
    wx = WeChat(client, settings.wechat_token, settings.wechat_aes_key, settings.wechat_appid)
    calls = _count_calls(client.app, delay=0.6)
    xml = text_xml("o-slow", "你好", msg_id=9001)
    resp = await wx.post_xml(xml)
    assert resp.status == 200 and resp.body == "success"
    for _ in range(50):
        if await Outbox.filter(recipient="o-slow").exists():
            break
        await asyncio.sleep(0.05)
    row = await Outbox.get(recipient="o-slow")
    assert row.kind == "late_reply" and "您好" in row.text
    retry = await wx.post_xml(xml)  # WeChat's retry after `success`: not handled again
    assert retry.body == "success" and len(calls) == 1
    assert await Outbox.filter(recipient="o-slow").count() == 1


async def test_long_reply_is_split_and_rest_goes_to_outbox(client, wx, monkeypatch):
    from handlers.engine import REGISTRY
    monkeypatch.setitem(REGISTRY.intents, "greeting",
                        _fixed_reply("\n".join(f"第{i}行:" + "社区活动" * 20 for i in range(40))))
    xml = text_xml("o-long", "你好", msg_id=20001)
    reply = (await wx.post_xml(xml)).content
    assert len(reply.encode()) <= 2000
    assert (await wx.post_xml(xml)).content == reply  # a retry: the same first part, nothing more
    rows = await Outbox.filter(recipient="o-long").order_by("id")
    assert rows and all(len(r.text.encode()) <= 2000 for r in rows)
    assert reply.startswith("第0行") and rows[-1].text.endswith("社区活动" * 20)


def _fixed_reply(text):
    async def handler(ctx):
        return text
    return handler


def test_split_reply_keeps_everything():
    text = "\n".join("行" * n for n in range(1, 400, 7))
    parts = split_reply(text, 300)
    assert all(len(p.encode()) <= 300 for p in parts)
    assert "".join(parts).replace("\n", "") == text.replace("\n", "")  # nothing lost
    short = "\n".join(f"第{i}行" for i in range(200))
    assert "\n".join(split_reply(short, 300)) == short  # cut only at line breaks when possible
    assert split_reply("短", 300) == ["短"]
    assert "".join(split_reply("长" * 1000, 300)) == "长" * 1000


async def test_voice_recognition_is_text(wx):
    reply = (await wx.post_xml(xml_of("o-voice", "voice", MediaId="m1", Format="amr",
                                      Recognition="你好。", MsgId=5511))).content
    assert "您好" in reply


async def test_media_gets_polite_reply(wx):
    reply = (await wx.post_xml(xml_of("o-img", "image", PicUrl="http://x/y.jpg", MediaId="m2",
                                      MsgId=5512))).content
    assert "图片" in reply and "回复数字" in reply
    reply = (await wx.post_xml(xml_of("o-img", "location", Location_X="23.1", Location_Y="113.2",
                                      Scale="15", Label="白云区", MsgId=5513))).content
    assert "位置" in reply


async def test_unsubscribe_marks_inactive_and_sends_nothing(wx):
    await wx.say("o-unsub", "你好")
    resp = await wx.post_xml(event_xml("o-unsub", "unsubscribe"))
    assert resp.body == "success"
    assert (await Resident.get(openid="o-unsub")).active is False
    assert not await Outbox.filter(recipient="o-unsub").exists()


async def test_other_events_answer_success(wx):
    for event in ("TEMPLATESENDJOBFINISH", "VIEW", "LOCATION", "subscribe_msg_popup_event"):
        resp = await wx.post_xml(event_xml("o-misc", event))
        assert resp.status == 200 and resp.body == "success", event


async def test_healthz(client, settings):
    resp = await client.get("/healthz")
    data = await resp.json()
    assert resp.status == 200 and data["database"] == "ok"
    assert data["redis"] == ("ok" if settings.redis_url else "not configured")

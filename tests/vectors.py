"""Official vectors from WeChat's sample code (WXBizMsgCrypt), as quoted in WECHAT.md."""
TOKEN = "spamtest"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
APPID = "wx2c2769f8efd9abc2"
TIMESTAMP = "1409735669"
NONCE = "1320562132"
MSG_SIGNATURE = "5d197aaffba7e9b25a30732f161a50dee96bd5fa"
ENCRYPT = (
    "hyzAe4OzmOMbd6TvGdIOO6uBmdJoD0Fk53REIHvxYtJlE2B655HuD0m8KUePWB3+LrPXo87wzQ1QLvbeUgmBM4x6F8PG"
    "HQHFVAFmOD2LdJF9FrXpbUAh0B5GIItb52sn896wVsMSHGuPE328HnRGBcrS7C41IzDWyWNlZkyyXwon8T332jisa+h6"
    "tEDYsVticbSnyU8dKOIbgU6ux5VTjg3yt+WGzjlpKn6NPhRjpA912xMezR4kw6KWwMrCVKSVCZciVGCgavjIQ6X8tCOp"
    "3yZbGpy0VxpAe+77TszTfRd5RJSVO/HTnifJpXgCSUdUue1v6h0EIBYYI1BD1DlD+C0CR8e6OewpusjZ4uBl9FyJvnhv"
    "Ql+q5rv1ixrcpCumEPo5MJSgM9ehVsNPfUM669WuMyVWQLCzpu9GhglF2PE=")
SAFE_BODY = (f"<xml><ToUserName><![CDATA[gh_10f6c3c3ac5a]]></ToUserName>"
             f"<Encrypt><![CDATA[{ENCRYPT}]]></Encrypt></xml>")
COMPAT_BODY = (
    "<xml><ToUserName><![CDATA[gh_10f6c3c3ac5a]]></ToUserName>"
    "<FromUserName><![CDATA[oyORnuP8q7ou2gfYjqLzSIWZf0rs]]></FromUserName>"
    "<CreateTime>1409735668</CreateTime><MsgType><![CDATA[text]]></MsgType>"
    "<Content><![CDATA[abcdteT]]></Content><MsgId>6054768590064713728</MsgId>"
    f"<Encrypt><![CDATA[{ENCRYPT}]]></Encrypt></xml>")
# GET verification vector: sha1 of sorted(token, timestamp, nonce).
GET_TOKEN, GET_TIMESTAMP, GET_NONCE = "AAAAA", "1714036504", "1514711492"
GET_SIGNATURE = "f464b24fc39322e44b38aa78f5edd27bd1441696"

"""Hashes (``md2`` … ``sha512``) and base64 ``encode``/``decode``."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable
from typing import Any

from rulebus.sql.functions import Function
from rulebus.sql.types import UNDEFINED, to_string, utf8
from rulebus.sql.versions import V2016


def _md2_table() -> bytes:
    # RFC 1319's substitution table, built from the digits of pi.
    return bytes(
        [
            41,
            46,
            67,
            201,
            162,
            216,
            124,
            1,
            61,
            54,
            84,
            161,
            236,
            240,
            6,
            19,
            98,
            167,
            5,
            243,
            192,
            199,
            115,
            140,
            152,
            147,
            43,
            217,
            188,
            76,
            130,
            202,
            30,
            155,
            87,
            60,
            253,
            212,
            224,
            22,
            103,
            66,
            111,
            24,
            138,
            23,
            229,
            18,
            190,
            78,
            196,
            214,
            218,
            158,
            222,
            73,
            160,
            251,
            245,
            142,
            187,
            47,
            238,
            122,
            169,
            104,
            121,
            145,
            21,
            178,
            7,
            63,
            148,
            194,
            16,
            137,
            11,
            34,
            95,
            33,
            128,
            127,
            93,
            154,
            90,
            144,
            50,
            39,
            53,
            62,
            204,
            231,
            191,
            247,
            151,
            3,
            255,
            25,
            48,
            179,
            72,
            165,
            181,
            209,
            215,
            94,
            146,
            42,
            172,
            86,
            170,
            198,
            79,
            184,
            56,
            210,
            150,
            164,
            125,
            182,
            118,
            252,
            107,
            226,
            156,
            116,
            4,
            241,
            69,
            157,
            112,
            89,
            100,
            113,
            135,
            32,
            134,
            91,
            207,
            101,
            230,
            45,
            168,
            2,
            27,
            96,
            37,
            173,
            174,
            176,
            185,
            246,
            28,
            70,
            97,
            105,
            52,
            64,
            126,
            15,
            85,
            71,
            163,
            35,
            221,
            81,
            175,
            58,
            195,
            92,
            249,
            206,
            186,
            197,
            234,
            38,
            44,
            83,
            13,
            110,
            133,
            40,
            132,
            9,
            211,
            223,
            205,
            244,
            65,
            129,
            77,
            82,
            106,
            220,
            55,
            200,
            108,
            193,
            171,
            250,
            36,
            225,
            123,
            8,
            12,
            189,
            177,
            74,
            120,
            136,
            149,
            139,
            227,
            99,
            232,
            109,
            233,
            203,
            213,
            254,
            59,
            0,
            29,
            57,
            242,
            239,
            183,
            14,
            102,
            88,
            208,
            228,
            166,
            119,
            114,
            248,
            235,
            117,
            75,
            10,
            49,
            68,
            80,
            180,
            143,
            237,
            31,
            26,
            219,
            153,
            141,
            51,
            159,
            17,
            131,
            20,
        ]
    )


def md2(data: bytes) -> str:
    """MD2 (RFC 1319), which ``hashlib`` does not provide."""
    table = _md2_table()
    pad = 16 - len(data) % 16
    message = data + bytes([pad]) * pad
    checksum = bytearray(16)
    last = 0
    for i in range(0, len(message), 16):
        for j in range(16):
            checksum[j] ^= table[message[i + j] ^ last]
            last = checksum[j]
    message += bytes(checksum)
    state = bytearray(48)
    for i in range(0, len(message), 16):
        for j in range(16):
            state[16 + j] = message[i + j]
            state[32 + j] = state[16 + j] ^ state[j]
        t = 0
        for round_ in range(18):
            for k in range(48):
                state[k] ^= table[t]
                t = state[k]
            t = (t + round_) % 256
    return bytes(state[:16]).hex()


def _hash(digest: Callable[[bytes], str]) -> Callable[[Any], Any]:
    def impl(value: Any) -> Any:
        text = to_string(value)
        return UNDEFINED if text is UNDEFINED else digest(utf8(text))

    return impl


def _hashlib(name: str) -> Callable[[Any], Any]:
    return _hash(lambda data: hashlib.new(name, data).hexdigest())


def encode(value: Any, scheme: Any) -> Any:
    """Base64 of ``value``: bytes as they are, anything else as its string form."""
    if scheme != "base64":
        return UNDEFINED
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode("ascii")
    text = to_string(value)
    if text is UNDEFINED:
        return UNDEFINED
    return base64.b64encode(utf8(text)).decode("ascii")


def decode(value: Any, scheme: Any) -> Any:
    """Decode base64: a JSON document becomes a value, other text a string, garbage Null."""
    if scheme != "base64":
        return UNDEFINED
    text = to_string(value)
    if text is UNDEFINED:
        return UNDEFINED
    try:
        raw = base64.b64decode(text, validate=True)
        decoded = raw.decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    try:
        return json.loads(decoded)
    except ValueError:
        return decoded


FUNCTIONS = [
    Function("md2", _hash(md2), 1, 1),
    Function("md5", _hashlib("md5"), 1, 1),
    Function("sha1", _hashlib("sha1"), 1, 1),
    Function("sha224", _hashlib("sha224"), 1, 1),
    Function("sha256", _hashlib("sha256"), 1, 1),
    Function("sha384", _hashlib("sha384"), 1, 1),
    Function("sha512", _hashlib("sha512"), 1, 1),
    Function("encode", encode, 2, 2, since=V2016),
    Function("decode", decode, 2, 2, since=V2016),
]

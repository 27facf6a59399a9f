#!/usr/bin/env python3
"""Independent decoder of the ruroco v1 datagram (SPEC.md section 2), written from the spec with
Python's `cryptography` and `hashlib` only, to cross-check the Rust client's encoding.
Usage: independent_decode.py KEYFILE DATAGRAM_HEX COMMAND_NAME  -> key=value lines on stdout.
It never sends or receives anything."""
import base64, hashlib, ipaddress, sys
from cryptography.hazmat.primitives.ciphers.aead import AESGCMSIV

key_file, datagram_hex, name = sys.argv[1:4]
raw = base64.b64decode(open(key_file).read().strip(), validate=True)
assert len(raw) == 40, "key file must hold 40 bytes"
key_id, key = raw[:8], raw[8:]
d = bytes.fromhex(datagram_hex)
assert len(d) == 94, "datagram must be 94 bytes"
iv, tag, ct = d[8:20], d[20:36], d[36:]
# On the wire: IV || tag || ciphertext; the library wants ciphertext || tag.
pt = AESGCMSIV(key).decrypt(iv, ct + tag, None)
assert len(pt) == 58


def ip(b):
    if b == bytes(16):
        return None
    a = ipaddress.IPv6Address(b)
    return str(a.ipv4_mapped or a)


want_hash = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big")
fields = {
    "key_id_matches": d[:8] == key_id,
    "version": pt[0],
    "cmd_hash_matches": int.from_bytes(pt[1:9], "big") == want_hash,
    "counter": int.from_bytes(pt[9:25], "big"),
    "strict": pt[25] != 0,
    "src_ip": ip(pt[26:42]),
    "dst_ip": ip(pt[42:58]),
}
for k, v in fields.items():
    print(f"{k}={v}")

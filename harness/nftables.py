"""Find and delete nftables tables over netlink (the standard library only; Debian's `nft` is not needed).

kube-network-policies keeps its rules in its own ``inet`` tables and leaves them when it is killed;
the node's teardown deletes them with delete_table().
"""

from __future__ import annotations

import errno
import itertools
import os
import socket
import struct

from harness import errors

__all__ = ["INET", "NftablesError", "delete_table", "table_exists"]

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_GETTABLE = 1
NFT_MSG_DELTABLE = 2
NFNL_MSG_BATCH_BEGIN = 0x10
NFNL_MSG_BATCH_END = 0x11
NFTA_TABLE_NAME = 1
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
#: The nftables family that covers IPv4 and IPv6 (NFPROTO_INET).
INET = 1
_sequence = itertools.count(int.from_bytes(os.urandom(2), "big"))


class NftablesError(errors.HarnessError):
    """The kernel refused a netfilter request."""


def table_exists(name: str, *, family: int = INET) -> bool:
    """Whether the kernel has the nftables table `name` in `family`."""
    code = _request(_message(NFT_MSG_GETTABLE, family, _table_name(name), flags=NLM_F_REQUEST | NLM_F_ACK))
    if code in (0, None):
        return True
    if code == -errno.ENOENT:
        return False
    raise NftablesError(f"asking for nftables table {name}: {os.strerror(-code)}")


def delete_table(name: str, *, family: int = INET) -> bool:
    """Delete the table `name` with its chains, sets and rules; False when there was none."""
    batch = (
        _message(NFNL_MSG_BATCH_BEGIN, 0, b"", flags=NLM_F_REQUEST, res_id=NFNL_SUBSYS_NFTABLES, subsystem=False)
        + _message(NFT_MSG_DELTABLE, family, _table_name(name), flags=NLM_F_REQUEST | NLM_F_ACK)
        + _message(NFNL_MSG_BATCH_END, 0, b"", flags=NLM_F_REQUEST, res_id=NFNL_SUBSYS_NFTABLES, subsystem=False)
    )
    code = _request(batch)
    if code == -errno.ENOENT:
        return False
    if code not in (0, None):
        raise NftablesError(f"deleting nftables table {name}: {os.strerror(-code)}")
    return True


def _table_name(name: str) -> bytes:
    value = name.encode() + b"\0"
    attribute = struct.pack("=HH", 4 + len(value), NFTA_TABLE_NAME) + value
    return attribute + b"\0" * (-len(attribute) % 4)


def _message(kind: int, family: int, payload: bytes, *, flags: int, res_id: int = 0, subsystem: bool = True) -> bytes:
    """One netlink message: header, nfgenmsg (family, version 0, big-endian resource id), attributes."""
    body = struct.pack("=BBH", family, 0, socket.htons(res_id)) + payload
    kind = (NFNL_SUBSYS_NFTABLES << 8) | kind if subsystem else kind
    return struct.pack("=IHHII", 16 + len(body), kind, flags, next(_sequence) & 0xFFFFFFFF, 0) + body


def _request(data: bytes) -> int | None:
    """Send `data`; the first error code the kernel answers (0: acknowledged), None if it answered data only."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER) as sock:
        sock.settimeout(5)
        sock.bind((0, 0))
        sock.sendall(data)
        answered_data = False
        while True:
            reply = sock.recv(65536)
            offset = 0
            while offset + 16 <= len(reply):
                length, kind = struct.unpack_from("=IH", reply, offset)
                if kind == NLMSG_ERROR:
                    (code,) = struct.unpack_from("=i", reply, offset + 16)
                    return int(code)
                if kind == NLMSG_DONE:
                    return None
                answered_data = True
                offset += max(length + (-length % 4), 16)
            if answered_data:
                # A GET answers the object, then the acknowledgement; the object is enough.
                return None

"""Throwaway certificates for ``chatctl bench --tls``: the bench's own cluster under mutual TLS.

They are made the way ``deploy/cluster.sh up --tls`` makes a real cluster's,
with openssl: an EC P-256 CA, a certificate per node naming it as
``chat://node/ID`` (and 127.0.0.1 and localhost, where the bench's nodes
listen), and one for chat users, which the load generator presents. So the
nodes check their peers and the bench's clients as deployed ones do, and the
figures include the cost of the handshakes and the encryption. openssl, not
the ``cryptography`` package: that is only a test dependency, and chatctl runs
without it. The files live in the bench's temporary folder, valid for a day,
and go with it.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import grpc

from client.connect import tls_credentials

DAYS = "1"
CURVE = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
LOCAL_NAMES = "IP:127.0.0.1,DNS:localhost"
USER = "chat-user"  # a certificate naming no role: it opens the chat API only


@dataclass(frozen=True, slots=True)
class BenchTls:
    """A CA and the certificates issued by it, as PEM files in folder."""

    folder: Path
    node_ids: tuple[int, ...]

    @property
    def ca(self) -> Path:
        return self.folder / "ca.pem"

    def node_args(self) -> dict[int, list[str]]:
        """Each node's chatnode flags that make it serve, and dial its peers, under mutual
        TLS."""
        return {
            i: ["--tls-cert", str(self.cert(_node(i))), "--tls-key", str(self.key(_node(i))),
                "--tls-ca", str(self.ca)]
            for i in self.node_ids
        }  # fmt: skip

    def credentials(self) -> grpc.ChannelCredentials:
        """The bench's channels' credentials: the CA, and a chat user's certificate."""
        credentials = tls_credentials(str(self.ca), str(self.cert(USER)), str(self.key(USER)))
        assert credentials is not None  # a CA was given
        return credentials

    def cert(self, name: str) -> Path:
        return self.folder / f"{name}.pem"

    def key(self, name: str) -> Path:
        return self.folder / f"{name}.key"


def _node(node_id: int) -> str:
    return f"node-{node_id}"


def make_tls(folder: Path, node_ids: Iterable[int]) -> BenchTls:
    """A new CA in folder, a certificate for each node and one for the
    bench's clients. RuntimeError, in one line, when openssl is missing or fails."""
    if shutil.which("openssl") is None:
        raise RuntimeError("--tls makes its certificates with openssl, which is not on PATH")
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    tls = BenchTls(folder, tuple(node_ids))
    _openssl("req", "-x509", "-new", *CURVE, "-keyout", str(folder / "ca.key"),
             "-out", str(tls.ca), "-days", DAYS, "-subj", "/CN=chat bench CA")  # fmt: skip
    for node_id in tls.node_ids:
        _issue(tls, _node(node_id), f"URI:chat://node/{node_id},{LOCAL_NAMES}")
    _issue(tls, USER, "DNS:chat-bench-client")
    return tls


def _issue(tls: BenchTls, name: str, names: str) -> None:
    """A key and a certificate for name, signed by the CA, whose SAN is names."""
    request, extensions = tls.folder / f"{name}.csr", tls.folder / f"{name}.ext"
    extensions.write_text(
        f"subjectAltName={names}\nbasicConstraints=CA:FALSE\n"
        "extendedKeyUsage=serverAuth,clientAuth\n"
    )
    _openssl("req", "-new", *CURVE, "-keyout", str(tls.key(name)), "-out", str(request),
             "-subj", f"/CN={name}")  # fmt: skip
    _openssl("x509", "-req", "-in", str(request), "-CA", str(tls.ca),
             "-CAkey", str(tls.folder / "ca.key"), "-CAcreateserial", "-days", DAYS,
             "-out", str(tls.cert(name)), "-extfile", str(extensions))  # fmt: skip


def _openssl(*args: str) -> None:
    done = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        raise RuntimeError(f"openssl {args[0]} failed: {why}")

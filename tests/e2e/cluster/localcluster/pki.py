"""A throwaway certificate authority, serving certificates and signing keys, made with openssl.

Called once per cluster by ``controlplane.up``. The CA signs the kube-apiserver's serving
certificate (valid for 127.0.0.1, localhost and the ``kubernetes.default.svc`` names) and the
pod runner's kubelet-style log endpoint. The same ``ca.crt`` is the controller-manager's
``--root-ca-file``, so it is what pods find in ``kube-root-ca.crt`` and in their projected
``ca.crt``: in-cluster clients verify the API server against it.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

CA_DAYS = 3650
CERT_DAYS = 365


class PkiError(RuntimeError):
    """openssl is missing or failed; the message carries its output."""


@dataclass(frozen=True)
class Pki:
    """Paths of the files ``make_pki`` wrote (all PEM)."""

    ca_cert: Path
    ca_key: Path
    apiserver_cert: Path
    apiserver_key: Path
    runner_cert: Path
    runner_key: Path
    service_account_key: Path
    service_account_pub: Path


def _openssl(*args: str, stdin: bytes | None = None) -> None:
    exe = shutil.which("openssl")
    if exe is None:
        raise PkiError("openssl not found on PATH: install Debian's 'openssl' package")
    proc = subprocess.run([exe, *args], input=stdin, capture_output=True, check=False)
    if proc.returncode != 0:
        raise PkiError(f"openssl {' '.join(args[:2])} failed: {proc.stderr.decode()[-2000:]}")


def _sign(directory: Path, name: str, common_name: str, sans: list[str], usage: str,
          ca_cert: Path, ca_key: Path) -> tuple[Path, Path]:
    key, csr, cert = directory / f"{name}.key", directory / f"{name}.csr", directory / f"{name}.crt"
    ext = directory / f"{name}.ext"
    ext.write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        f"extendedKeyUsage={usage}\n"
        f"subjectAltName={','.join(sans)}\n"
    )
    _openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
             "-out", str(csr), "-subj", f"/CN={common_name}")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key),
             "-CAcreateserial", "-days", str(CERT_DAYS), "-sha256", "-extfile", str(ext),
             "-out", str(cert))
    csr.unlink()
    ext.unlink()
    key.chmod(0o600)
    return cert, key


def make_pki(directory: Path, service_ip: str) -> Pki:
    """Create a CA, the apiserver and runner serving certs and a service-account RSA key pair.

    ``service_ip`` is the ClusterIP of the ``kubernetes`` Service; it goes into the
    apiserver certificate's subjectAltName next to 127.0.0.1. Raises PkiError.
    """
    directory.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = directory / "ca.crt", directory / "ca.key"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key),
             "-out", str(ca_cert), "-days", str(CA_DAYS), "-sha256",
             "-subj", "/CN=tablesync-local-ca",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature")
    ca_key.chmod(0o600)
    apiserver_cert, apiserver_key = _sign(
        directory, "apiserver", "kube-apiserver",
        ["IP:127.0.0.1", f"IP:{service_ip}", "DNS:localhost", "DNS:kubernetes",
         "DNS:kubernetes.default", "DNS:kubernetes.default.svc",
         "DNS:kubernetes.default.svc.cluster.local"],
        "serverAuth", ca_cert, ca_key)
    runner_cert, runner_key = _sign(
        directory, "runner", "system:node:local-runner", ["IP:127.0.0.1", "DNS:localhost"],
        "serverAuth", ca_cert, ca_key)
    sa_key, sa_pub = directory / "service-account.key", directory / "service-account.pub"
    _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
             "-out", str(sa_key))
    _openssl("pkey", "-in", str(sa_key), "-pubout", "-out", str(sa_pub))
    sa_key.chmod(0o600)
    return Pki(ca_cert=ca_cert, ca_key=ca_key, apiserver_cert=apiserver_cert,
               apiserver_key=apiserver_key, runner_cert=runner_cert, runner_key=runner_key,
               service_account_key=sa_key, service_account_pub=sa_pub)
